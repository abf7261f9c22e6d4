"""Closed forms of the replay and near-on-policy results (paper R10-R13): starvation, SDFT, TTT-Discover, OAPL.

Each is small enough to be checked against a direct simulation of its two-atom abstraction (tests/theory).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ptforget.errors import check_choice

from .population import check_open_unit, check_positive, check_replay

STARVATION_MODES = ("on_policy", "mixture", "fixed_slots")



def bisect_root(f: Callable[[float], float], lo: float, hi: float, iters: int = 200) -> float:
    """The root of an increasing ``f`` bracketed by [lo, hi] (f(lo) <= 0 < f(hi)): the midpoint after ``iters``
    halvings (200 reach float precision from any bracket these solvers use)."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)

def logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def starvation_probability(beta: float, batch: int, replay: float = 0.0, mode: str = "on_policy") -> float:
    """P(no old-mode sample in a batch of size B) (R10/P13).

    on_policy: (1-beta)^B; mixture (each draw from p_old w.p. lam, else from q): ((1-lam)(1-beta))^B;
    fixed_slots (ceil(lam B) replay slots): 0 when lam > 0, else on-policy.
    """
    b = float(beta)
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    lam = check_replay(replay)
    check_choice(mode, "mode", STARVATION_MODES)
    if mode == "on_policy" or (mode == "fixed_slots" and math.ceil(lam * batch) == 0):
        return (1.0 - b) ** batch
    if mode == "mixture":
        return ((1.0 - lam) * (1.0 - b)) ** batch
    return 0.0


def starvation_given_mass(mass: Any, batch: int, replay: float = 0.0, mode: str = "on_policy",
                          source_mass: float = 1.0) -> Any:
    """P(no old-region sample in a batch of B) when the model's old-region mass is ``mass`` (array or scalar) and
    a replay sample lands in the old region with probability ``source_mass`` (p_old's mass there).

    on_policy: (1-m)^B; mixture: (lam (1-a) + (1-lam)(1-m))^B; fixed_slots with k = ceil(lam B) replay slots:
    (1-a)^k (1-m)^(B-k). With a = 1 these are R10's forms.
    """
    import numpy as np

    m = np.asarray(mass, dtype=float)
    lam = check_replay(replay)
    check_choice(mode, "mode", STARVATION_MODES)
    a = float(source_mass)
    if mode == "fixed_slots" and lam > 0:
        k = math.ceil(lam * batch - 1e-12)
        return (1 - a) ** k * (1 - m) ** (batch - k)
    if mode == "on_policy":
        lam = 0.0
    return (lam * (1 - a) + (1 - lam) * (1 - m)) ** batch


def sdft_weight_after_refreshes(beta0: float, kappa: float, k: int) -> float:
    """R11: old weight after k teacher refreshes when each teacher multiplies the old odds by kappa."""
    check_open_unit(beta0, "beta0")
    check_positive(kappa, "kappa")
    return sigmoid(logit(beta0) + k * math.log(kappa))


def sdft_anchored_weight(beta0: float, beta_anchor: float, lam: float, k: int) -> float:
    """Old weight after k exact-tracking updates towards the teacher (1-lam) q + lam a: fixed point beta_a."""
    return beta_anchor + (1.0 - lam) ** k * (beta0 - beta_anchor)


def ttt_fixed_point(gamma: float, lam: float, reward_old: float, reward_new: float, beta_ref: float) -> float:
    """R12: stationary old weight of the entropic objective with KL strength lam (two-atom abstraction).

    Solves logit b = logit b_ref + (e^{g R_o} - e^{g R_n}) / (lam Z), Z = b e^{g R_o} + (1-b) e^{g R_n}, by
    bisection in logit space (the residual is increasing). gamma = inf gives the worst case (bound tight).
    lam = 0: 0 if R_n > R_o, 1 if R_o > R_n, else beta_ref.
    """
    lref = logit(check_open_unit(beta_ref, "beta_ref"))
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    if reward_old == reward_new:
        return float(beta_ref)
    if lam == 0:
        return 0.0 if reward_new > reward_old else 1.0
    if math.isinf(gamma):
        a, b = (1.0, 0.0) if reward_old > reward_new else (0.0, 1.0)
    else:
        m = max(reward_old, reward_new)
        a, b = math.exp(gamma * (reward_old - m)), math.exp(gamma * (reward_new - m))

    def resid(ell: float) -> float:
        p = sigmoid(ell)
        return ell - lref - (a - b) / (lam * (p * a + (1.0 - p) * b))

    lo, hi = lref - 1.0, lref + 1.0
    for _ in range(1100):  # doubling the bracket: 2^1100 exceeds every float, so this always ends
        if not resid(lo) > 0:
            break
        lo = lref - 2.0 * (lref - lo)
    for _ in range(1100):
        if not resid(hi) < 0:
            break
        hi = lref + 2.0 * (hi - lref)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"no finite stationary weight for lam={lam!r}, gamma={gamma!r} (the KL anchor is too weak)")
    return sigmoid(bisect_root(resid, lo, hi))


def ttt_lower_bound(beta_inf: float, lam: float, beta_ref: float) -> float:
    """R12 bound sigmoid(logit b_ref - 1/(lam (1 - b_inf))) on the stationary old weight (lam > 0)."""
    check_positive(lam, "lam")
    return sigmoid(logit(check_open_unit(beta_ref, "beta_ref")) - 1.0 / (lam * (1.0 - beta_inf)))


def oapl_weight(beta0: float, k: int, reward_old: float, reward_new: float, tau: float) -> float:
    """R13: old weight after k lag refreshes, sigmoid(logit b0 - k (r_n - r_o)/tau)."""
    check_open_unit(beta0, "beta0")
    check_positive(tau, "tau")
    return sigmoid(logit(beta0) - k * (reward_new - reward_old) / tau)
