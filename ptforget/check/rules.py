"""Comparison rules of the check: each rule holds its bounds and renders its own text, so prose and bounds agree.

A rule is judged on the 95% t-interval of the measured statistic over seeds (``ptforget.stats.summarize``):

* ``holds`` when the whole interval lies inside the rule's bounds;
* ``fails`` when the whole interval lies outside them;
* ``inconclusive`` when it straddles a bound, or when there is no interval (n < 2) for a statistic that has
  seed-to-seed noise. Only a rule marked ``exact`` (a deterministic computation, no seeds) judges a single value.

Every rule carries ``why``: the reason for the size of its tolerance (Monte-Carlo error, a measured noise floor, a
relative band for a scaling law), rendered after the bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptforget.stats import Summary

VERDICTS = ("holds", "fails", "inconclusive")


def fmt(v: float | None) -> str:
    """A number as the report prints it (4 significant digits; n/a for None or NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


@dataclass(frozen=True)
class Rule:
    """``lo <= statistic <= hi``; subclasses say it in the claim's own terms."""

    lo: float = -math.inf
    hi: float = math.inf
    why: str = ""
    #: the statistic is deterministic (no seeds): a single value is judged as it is
    exact: bool = False

    @property
    def bounds(self) -> tuple[float, float]:
        return self.lo, self.hi

    @property
    def predicted(self) -> float | None:
        """The number the rule is built around (None for one-sided or interval rules)."""
        return None

    def condition(self) -> str:
        return f"in [{fmt(self.lo)}, {fmt(self.hi)}]"

    def text(self) -> str:
        return self.condition() + (f" ({self.why})" if self.why else "")

    def judge(self, s: Summary) -> str:
        """holds / fails / inconclusive for the interval of ``s`` (see the module docstring)."""
        if s.n == 0 or not math.isfinite(s.mean):
            return "inconclusive"
        if s.has_interval:
            lo, hi = s.lo, s.hi
        elif self.exact:
            lo = hi = s.mean
        else:
            return "inconclusive"
        if self.lo <= lo and hi <= self.hi:
            return "holds"
        if hi < self.lo or lo > self.hi:
            return "fails"
        return "inconclusive"


def near(target: float, tol: float, why: str, exact: bool = False) -> Rule:
    """|statistic - target| <= tol."""
    return Near(target - tol, target + tol, why, exact, target, tol)


def resolution(target: float, values, why: str = "", gap: float | None = None) -> Rule:
    """|statistic - target| <= 2 t s / sqrt(n): twice the 95% half-width of the n-seed mean (s the
    seeds' spread). A right prediction holds with probability about 0.95 and almost never fails; one off by more
    than 3 half-widths fails.

    ``gap``: the distance the run travels from its start to the prediction. The band is then at least 1% of it
    (seeds agreeing to far less cannot matter) and at most a quarter of it (``GAP_CAP``): a wider band would not
    exclude a run that stopped a quarter of the way short, so a noisier experiment becomes inconclusive instead of
    easier to pass."""
    from ptforget.stats import summarize, t_quantile

    s = summarize(values)
    half = t_quantile(0.975, s.n - 1) * s.std / math.sqrt(s.n) if s.n >= 2 and s.std else 0.0
    tol = 2.0 * half
    reason = "2 x the 95% half-width of the seed mean (the experiment's resolution)"
    if gap is not None and math.isfinite(gap) and gap > 0:
        if tol < GAP_FLOOR * gap:
            tol, reason = GAP_FLOOR * gap, "floor: 1% of the gap from the start to the prediction"
        elif tol > GAP_CAP * gap:
            tol, reason = GAP_CAP * gap, ("capped at a quarter of the gap from the start to the prediction (the seeds' "
                                          "spread is wider: more seeds resolve it)")
    return Near(target - tol, target + tol, reason + (f"; {why}" if why else ""), False, target, tol)


#: the resolution band's bounds as fractions of the start-to-prediction gap
GAP_FLOOR, GAP_CAP = 0.01, 0.25


def relative(target: float, frac: float, why: str, exact: bool = False) -> Rule:
    """|statistic - target| <= frac |target| (a relative band, e.g. for a scaling law)."""
    tol = abs(frac * target)
    return Relative(target - tol, target + tol, why, exact, target, frac)


def at_most(bound: float, why: str, exact: bool = False, predicted: float | None = None) -> Rule:
    """statistic <= bound (``predicted``: the theory's value, shown beside the bound)."""
    return AtMost(-math.inf, bound, why, exact, predicted)


def at_least(bound: float, why: str, exact: bool = False, predicted: float | None = None) -> Rule:
    """statistic >= bound (``predicted``: the theory's value, shown beside the bound)."""
    return AtLeast(bound, math.inf, why, exact, predicted)


def between(lo: float, hi: float, why: str, exact: bool = False) -> Rule:
    """lo <= statistic <= hi."""
    return Rule(lo, hi, why, exact)


@dataclass(frozen=True)
class Near(Rule):
    target: float = 0.0
    tol: float = 0.0

    @property
    def predicted(self) -> float:
        return self.target

    def condition(self) -> str:
        return f"within {fmt(self.tol)} of {fmt(self.target)}"


@dataclass(frozen=True)
class Relative(Rule):
    target: float = 0.0
    frac: float = 0.0

    @property
    def predicted(self) -> float:
        return self.target

    def condition(self) -> str:
        return f"within {100 * self.frac:.3g}% of {fmt(self.target)}"


@dataclass(frozen=True)
class AtMost(Rule):
    shown: float | None = None

    @property
    def predicted(self) -> float | None:
        return self.shown

    def condition(self) -> str:
        return f"<= {fmt(self.hi)}"


@dataclass(frozen=True)
class AtLeast(Rule):
    shown: float | None = None

    @property
    def predicted(self) -> float | None:
        return self.shown

    def condition(self) -> str:
        return f">= {fmt(self.lo)}"
