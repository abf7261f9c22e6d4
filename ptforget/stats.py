"""The project's one statistics module: Student-t quantiles and the 95% t-interval over seeds.

``summarize`` is what the check and the reports use: a single value is reported as n = 1 with no interval (never
as a zero-width interval), and non-finite values are left out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def is_finite_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)




def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom (``df=inf``: standard normal)."""
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Quantile (inverse CDF) of Student's t with ``df > 0`` degrees of freedom, 0 < p < 1.

    Bisection on :func:`t_cdf`; agrees with ``scipy.stats.t.ppf`` to ~1e-10 relative. ``df=inf`` gives the
    normal quantile. Cached: figures ask for the same few (p, df) at every point of every band.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e300:
            return math.inf
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Iterable[float], level: float = 0.95) -> dict[str, float]:
    """n, mean, sample std and two-sided t-interval of the finite entries of ``values``.

    Returns keys n, mean, std, ci (half-width), lo, hi. With n == 1 the std and interval are NaN; with
    n == 0 everything but n is NaN.
    """
    xs = [float(v) for v in values if is_finite_number(v)]
    n = len(xs)
    nan = math.nan
    if n == 0:
        return {"n": 0, "mean": nan, "std": nan, "ci": nan, "lo": nan, "hi": nan}
    mean = math.fsum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": nan, "ci": nan, "lo": nan, "hi": nan}
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci": half, "lo": mean - half, "hi": mean + half}


#: the values a metric can take (a run's summary fields by their report name, extremes included): an interval is
#: clipped to these, so a band never claims an impossible value (a negative mass)
UNIT = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
METRIC_RANGES = {"old_mass": UNIT, "weight": UNIT, "comp_bc": UNIT, "target_old_mass": UNIT, "drift": NON_NEGATIVE,
                 "region_drift": NON_NEGATIVE, "new_error": NON_NEGATIVE, "comp_drift": NON_NEGATIVE,
                 "comp_new_error": NON_NEGATIVE, "wall_time_s": NON_NEGATIVE}


def metric_range(metric: str) -> tuple[float, float]:
    """(low, high) a metric can take (``old_mass_min`` is ``old_mass``'s); (-inf, inf) when nothing bounds it."""
    for stat in ("_first", "_last", "_min", "_max"):
        if metric.endswith(stat):
            metric = metric[: -len(stat)]
            break
    return METRIC_RANGES.get(metric, (-math.inf, math.inf))


def clipped_ci(values: Iterable[float], metric: str, level: float = 0.95) -> dict[str, float]:
    """``mean_ci`` with ``lo``/``hi`` clipped to the metric's range (``ci`` stays the t half-width)."""
    st = mean_ci(values, level)
    low, high = metric_range(metric)
    if st["n"] > 1:
        st["lo"], st["hi"] = max(st["lo"], low), min(st["hi"], high)
    return st


@dataclass(frozen=True)
class Summary:
    """Mean and two-sided t-interval of the finite values; ``lo``/``hi`` are None when n < 2 (no interval)."""

    n: int
    mean: float
    std: float | None
    lo: float | None
    hi: float | None

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None


def summarize(values: Iterable[Any], level: float = 0.95) -> Summary:
    """Summary of ``values`` (non-finite entries dropped): n = 0 gives a NaN mean, n = 1 no interval."""
    st = mean_ci(values, level)
    if st["n"] < 2:
        return Summary(st["n"], st["mean"], None, None, None)
    return Summary(st["n"], st["mean"], st["std"], st["lo"], st["hi"])


def fit_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of y on x (NaN with fewer than two points or a non-finite y)."""
    import numpy as np

    xa, ya = np.asarray(list(x), float), np.asarray(list(y), float)
    if xa.size < 2 or not np.all(np.isfinite(ya)):
        return float("nan")
    return float(np.polyfit(xa, ya, 1)[0])


def difference(a: Iterable[Any], b: Iterable[Any], level: float = 0.95) -> Summary:
    """mean(a) - mean(b) with Welch's t-interval: two independent groups compared in distribution, not by seed."""
    xa = [float(v) for v in a if is_finite_number(v)]
    xb = [float(v) for v in b if is_finite_number(v)]
    n = min(len(xa), len(xb))
    if n == 0:
        return Summary(0, math.nan, None, None, None)
    d = math.fsum(xa) / len(xa) - math.fsum(xb) / len(xb)
    if n < 2:
        return Summary(n, d, None, None, None)
    va = math.fsum((x - math.fsum(xa) / len(xa)) ** 2 for x in xa) / (len(xa) - 1) / len(xa)
    vb = math.fsum((x - math.fsum(xb) / len(xb)) ** 2 for x in xb) / (len(xb) - 1) / len(xb)
    se = math.sqrt(va + vb)
    if se == 0:
        return Summary(n, d, 0.0, d, d)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = t_quantile(0.5 + level / 2.0, df) * se
    return Summary(n, d, se, d - half, d + half)


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (a collapse rate over seeds)."""
    if n == 0:
        return math.nan, math.nan
    z = t_quantile(0.5 + level / 2.0, math.inf)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rank_test(a: Iterable[Any], b: Iterable[Any]) -> dict[str, float]:
    """Mann-Whitney U test of two independent groups (normal approximation with tie correction) and the
    Hodges-Lehmann shift (median of all pairwise differences a - b): robust where one seed can be an outlier.

    Returns n_a, n_b, U (pairs with a > b, ties half), ``p_greater`` (one-sided: a tends to exceed b),
    ``p_less`` and ``shift``.
    """
    xa = [float(v) for v in a if is_finite_number(v)]
    xb = [float(v) for v in b if is_finite_number(v)]
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return {"n_a": na, "n_b": nb, "U": math.nan, "p_greater": math.nan, "p_less": math.nan, "shift": math.nan}
    u = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in xa for y in xb)
    pooled = sorted(xa + xb)
    n = na + nb
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1] == pooled[i]:
            j += 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    var = na * nb / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    mu = na * nb / 2.0
    if var <= 0:
        pg = pl = 0.5
    else:  # continuity-corrected
        pg = 1.0 - normal_cdf((u - mu - 0.5) / math.sqrt(var))
        pl = normal_cdf((u - mu + 0.5) / math.sqrt(var))
    diffs = sorted(x - y for x in xa for y in xb)
    m = len(diffs)
    shift = diffs[m // 2] if m % 2 else 0.5 * (diffs[m // 2 - 1] + diffs[m // 2])
    return {"n_a": na, "n_b": nb, "U": u, "p_greater": pg, "p_less": pl, "shift": shift}
