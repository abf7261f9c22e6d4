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


# ---------------------------------------------------------------------------------------------- discriminations
#: verdicts of a theory row: the theory against its named rival(s) (see ``Discrimination``)
THEORY_VERDICTS = ("supports theory", "supports rival", "undecided", "untestable", "not converged")
#: verdicts of a replication row (a published simulation re-run)
REPLICATION_VERDICTS = ("reproduced", "not reproduced", "undecided")
#: the default margin as a fraction of the distance from the theory's value to its nearest rival: the two
#: equivalence bands are then disjoint, with half the distance between them
MARGIN_FRACTION = 0.25
#: power a row must reach at its number of seeds (from the pilot's spread) to be judged in the quick profile
TARGET_POWER = 0.8


@dataclass(frozen=True)
class Rival:
    """A named alternative to the theory, with its predicted value of the row's statistic and why it is plausible."""

    name: str
    predicted: float
    why: str

    def to_json(self) -> dict:
        return {"name": self.name, "predicted": self.predicted, "why": self.why}


@dataclass(frozen=True)
class Discrimination(Rule):
    """A theory row: the theory's value against named rivals, each with an equivalence band of half-width
    ``margin`` (in the statistic's units, declared with the claim: never derived from the run's spread).

    * *supports theory*: the 90% interval lies inside the theory's band (two one-sided tests at 5%) **and** the 95%
      interval misses every rival's band;
    * *supports rival*: the same with the roles swapped (for the rival whose band holds the 90% interval);
    * *undecided*: neither (the detail says which test lacked power).

    ``wrong`` is the value of a deliberately wrong theory, used in its place by the check's negative control
    (``negative_control=true``) to show that the check can reject a theory.
    """

    theory: float = math.nan
    rivals: tuple[Rival, ...] = ()
    margin: float = 0.0
    margin_why: str = ""
    wrong: float | None = None
    #: the margin is MARGIN_FRACTION x the distance to the nearest rival (recomputed for the negative control)
    relative_margin: bool = False

    @property
    def predicted(self) -> float:
        return self.theory

    @property
    def rival(self) -> Rival:
        return self.rivals[0]

    def condition(self) -> str:
        rv = "; ".join(f"rival '{r.name}': {fmt(r.predicted)}" for r in self.rivals)
        return f"theory {fmt(self.theory)} ± {fmt(self.margin)} against {rv}"

    def text(self) -> str:
        return f"{self.condition()} (margin: {self.margin_why})"

    def negative(self) -> Discrimination | None:
        """The same test with the deliberately wrong theory in place of the theory (None: none declared)."""
        if self.wrong is None:
            return None
        m = self.margin
        if self.relative_margin:
            m = MARGIN_FRACTION * min(abs(self.wrong - r.predicted) for r in self.rivals)
        return Discrimination(self.wrong - m, self.wrong + m, self.why, self.exact, self.wrong, self.rivals, m,
                              "negative control: " + self.margin_why, None, self.relative_margin)

    def decide(self, s90: Summary, s95: Summary) -> tuple[str, str]:
        """(verdict, detail) from the 90% and 95% intervals of the statistic."""
        if s95.n == 0 or not math.isfinite(s95.mean):
            return "undecided", "no finite value"
        if s95.has_interval and s90.has_interval:
            i90, i95 = (s90.lo, s90.hi), (s95.lo, s95.hi)
        elif self.exact:
            i90 = i95 = (s95.mean, s95.mean)
        else:
            return "undecided", f"n={s95.n}: no interval"

        def inside(iv: tuple[float, float], c: float) -> bool:
            return c - self.margin <= iv[0] and iv[1] <= c + self.margin

        def misses(iv: tuple[float, float], c: float) -> bool:
            return iv[1] < c - self.margin or iv[0] > c + self.margin

        t_in, t_out = inside(i90, self.theory), misses(i95, self.theory)
        if t_in and all(misses(i95, r.predicted) for r in self.rivals):
            return "supports theory", ""
        for r in self.rivals:
            if inside(i90, r.predicted) and t_out:
                return "supports rival", f"rival '{r.name}'"
        why = []
        if not t_in:
            why.append("the 90% interval is not inside the theory's band" + (" (it excludes it)" if t_out else ""))
        near = [r.name for r in self.rivals if not misses(i95, r.predicted)]
        if near:
            why.append("the 95% interval reaches the band of " + ", ".join(f"'{n}'" for n in near))
        return "undecided", "; ".join(why)

    def power(self, se: float, n: int) -> float:
        """P(supports theory) with n seeds when the theory is right and one seed's spread is ``se`` x sqrt(n)
        (normal approximation of the mean, t quantiles for the intervals): the pilot's power at this margin."""
        from ptforget.stats import normal_cdf, t_quantile

        if not (math.isfinite(se) and se > 0) or n < 2:
            return math.nan
        h90, h95 = t_quantile(0.95, n - 1) * se, t_quantile(0.975, n - 1) * se
        lo, hi = self.theory - self.margin + h90, self.theory + self.margin - h90
        for r in self.rivals:
            if r.predicted >= self.theory:
                hi = min(hi, r.predicted - self.margin - h95)
            else:
                lo = max(lo, r.predicted + self.margin + h95)
        if hi <= lo:
            return 0.0
        return normal_cdf((hi - self.theory) / se) - normal_cdf((lo - self.theory) / se)

    def seeds_needed(self, sd: float, cap: int = 200) -> int | None:
        """The fewest seeds giving power >= TARGET_POWER for a seed spread ``sd`` (None: not within ``cap``)."""
        for n in range(2, cap + 1):
            if self.power(sd / math.sqrt(n), n) >= TARGET_POWER:
                return n
        return None


def discriminate(theory: float, rivals: list[Rival] | Rival, why: str = "", margin: float | None = None,
                 margin_why: str = "", wrong: float | None = None, exact: bool = False) -> Discrimination:
    """A theory row's test. Without ``margin`` it is MARGIN_FRACTION x the distance to the nearest rival."""
    rv = tuple([rivals] if isinstance(rivals, Rival) else rivals)
    if not rv:
        raise ValueError("a theory row needs at least one rival")
    rel = margin is None
    if rel:
        margin = MARGIN_FRACTION * min(abs(theory - r.predicted) for r in rv)
        margin_why = margin_why or (f"{MARGIN_FRACTION:g} x the distance from the theory to the nearest rival: the "
                                    "two bands are disjoint")
    return Discrimination(theory - margin, theory + margin, why, exact, theory, rv, float(margin), margin_why, wrong,
                          rel)
