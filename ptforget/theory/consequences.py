"""The abstract's consequences as numbers a learned run can be compared with: the exponential rate of KL(q || p*)
near theta* (P7r), the drift carried by misassignment along a trajectory (P10m) and the batch-size law of old-mode
starvation (P13c). Whitened 1-D units (Sigma = I), as in ``population``.

Rate (R8). Near theta*, KL(q || p*) = e^T H e / 2 + O(|e|^3) with H the Fisher information (= the Hessian) and
e = theta - theta*. Gradient descent with step h and per-group multipliers M maps e -> (I - h M H) e, so after the
transients e_t lies along the slowest eigenvector of M^1/2 H M^1/2, shrinking by the spectral radius
rho = max_i |1 - h lambda_i| per step, and the KL, quadratic in e, by rho^2: ln KL falls by 2 ln rho per step,
twice the parameters' rate. A rate that does not depend on the conditioning kappa is that of a Hessian with the
same total curvature and every eigenvalue equal (kappa = 1): 2 ln |1 - h tr(M H) / p|.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .overlap import misassignment_general
from .population import fisher_information, lr_multipliers, population_flow, theta_star


def kl_rates(delta: float, beta_star: float, lr: float, weight: str = "logit", dim: int = 1,
             lr_mult: Mapping[str, float] | None = None, sigma: float = 1.0, train_means: bool = True
             ) -> dict[str, float]:
    """Per-step log-rates of KL(q || p*) under GD near theta* (see the module docstring).

    Returns ``theory`` = 2 ln rho (rho the spectral radius of I - h M H), ``parameter`` = ln rho (the parameters'
    own rate: what the KL would do if it were linear in the error), ``isotropic`` = 2 ln |1 - h mean eigenvalue|
    (the same curvature with kappa = 1), and ``kappa`` of M^1/2 H M^1/2.
    """
    H = fisher_information(delta, beta_star, weight, dim, sigma)
    mult = lr_multipliers(lr_mult, train_means)
    m = np.concatenate([[mult["weight"]], np.full(dim, mult["old"]), np.full(dim, mult["new"])])
    keep = m > 0
    r = np.sqrt(m[keep])
    ev = np.linalg.eigvalsh(H[np.ix_(keep, keep)] * r[:, None] * r[None, :])
    rho = float(np.max(np.abs(1.0 - lr * ev)))
    iso = abs(1.0 - lr * float(ev.mean()))
    return {"theory": 2.0 * math.log(rho), "parameter": math.log(rho), "isotropic": 2.0 * math.log(iso),
            "kappa": float(ev[-1] / ev[0]), "rho": rho}


def window_rate(steps: np.ndarray, kl: np.ndarray, hi: float, lo: float, min_points: int = 3) -> float:
    """The least-squares slope of ln KL against the step over the stretch where the KL first falls from ``hi``
    to ``lo`` (the points from the last crossing of ``hi`` before the first at or below ``lo``); NaN when the
    stretch holds fewer than ``min_points`` evaluations or the KL never reaches ``lo``."""
    steps, kl = np.asarray(steps, float), np.asarray(kl, float)
    below = np.nonzero(np.isfinite(kl) & (kl <= lo))[0]
    if not below.size:
        return math.nan
    end = int(below[0])
    above = np.nonzero(~np.isfinite(kl[:end]) | (kl[:end] > hi))[0]
    start = int(above[-1]) + 1 if above.size else 0
    t, v = steps[start:end + 1], kl[start:end + 1]
    if len(t) < min_points or np.any(v <= 0):
        return math.nan
    return float(np.polyfit(t, np.log(v), 1)[0])


def stretch_rates(delta: float, beta_star: float, lr: float, new_offset: float, beta0: float, hi: float, lo: float,
                  max_steps: int = 64000) -> dict[str, float]:
    """The KL's rate over the stretch from ``hi`` to ``lo`` (``window_rate``) of a run from the paper's start:

    ``hessian``: the population Hessian's, i.e. GD linearised at theta* (e -> (I - h H) e, KL = e^T H e / 2) from
    the exact flow's state where its KL crosses ``hi``; ``flow``: the exact population flow's own; ``steps``: the
    flow's step count to ``lo`` (-1 if not within ``max_steps``). Over a finite stretch the stiff directions have
    not died out, so both are faster than the asymptotic 2 ln rho of ``kl_rates``. Logit weight, unit multipliers.
    """
    steps = 2000
    while True:
        f = population_flow("rkl", delta, beta_star, beta0, new_offset, lr, steps)
        hit = np.nonzero(f["loss"] <= lo)[0]
        if hit.size or steps >= max_steps:
            break
        steps *= 4
    flow = window_rate(f["step"], f["loss"], hi, lo)
    above = np.nonzero(f["loss"] > hi)[0]
    if not hit.size or not above.size:
        return {"hessian": math.nan, "flow": flow, "steps": -1}
    i = int(above[above < hit[0]][-1]) if np.any(above < hit[0]) else 0
    ts = theta_star(delta, beta_star, "logit", 1)
    w = float(f["weight"][i])
    e = np.array([math.log(w / (1 - w)) - float(np.asarray(ts["weight"]).ravel()[0]), f["old_mean"][i],
                  f["new_mean"][i] - delta])
    H = fisher_information(delta, beta_star)
    A = np.eye(3) - lr * H
    n = 4 * int(hit[0] - i) + 10
    kl = np.empty(n)
    for t in range(n):
        kl[t] = 0.5 * e @ H @ e
        e = A @ e
    return {"hessian": window_rate(np.arange(n), kl, hi, lo), "flow": flow, "steps": int(f["step"][hit[0]])}


def misassignment_path(weight: Sequence[float], mu_o: Sequence[float], mu_n: Sequence[float]) -> np.ndarray:
    """m_{n->o}(t) of a 1-D two-component model along a trajectory: E_{x ~ N(mu_n(t), 1)}[w_o(x)], the model's
    old responsibility of its own new component's samples (reverse KL draws its samples from the model), with
    the weight beta(t) and means at each recorded step (whitened units)."""
    w = np.clip(np.asarray(weight, float), 1e-12, 1 - 1e-12)
    mo, mn = np.asarray(mu_o, float), np.asarray(mu_n, float)
    return np.array([misassignment_general([a], [b], float(c), [a], [b], "new_to_old")
                     for a, b, c in zip(mo, mn, w, strict=True)])


def integrated(steps: Sequence[float], values: Sequence[float], lr: float, until: float | None = None) -> float:
    """h x the trapezoid integral of ``values`` over the steps [0, until] (default: the whole record): the
    integrated misassignment M(t) = h sum_s m(s) in the gradient flow's time."""
    t, v = np.asarray(steps, float), np.asarray(values, float)
    keep = t <= (t[-1] if until is None else until)
    t, v = t[keep], v[keep]
    if len(t) < 2:
        return 0.0
    return float(lr * np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(t)))


def log_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of ln y against ln x (NaN with fewer than 2 finite positive pairs)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def flow_drift_and_misassignment(flow: Mapping[str, np.ndarray], lr: float) -> tuple[float, float]:
    """(sup |mu_o - mu_o*|, M up to the step of that sup) of an exact population flow (``population_flow``)."""
    drift = np.asarray(flow["old_mean_error"], float)
    i = int(np.argmax(drift))
    m = misassignment_path(flow["weight"], flow["old_mean"], flow["new_mean"])
    return float(drift[i]), integrated(flow["step"], m, lr, float(flow["step"][i]))


def starvation_log_factor(beta: float, lam: float = 0.0, mode: str = "mixture") -> float:
    """ln of the per-sample factor of P(no old sample in a batch of B) = factor^B (R10): ln(1 - beta) on-policy
    (lam = 0), ln((1 - lam)(1 - beta)) with mixture replay; -inf with fixed replay slots (starvation is impossible
    once ceil(lam B) >= 1)."""
    if not 0 < beta < 1 or not 0 <= lam < 1:
        raise ValueError(f"beta must lie in (0, 1) and lam in [0, 1), got beta={beta!r}, lam={lam!r}")
    if mode == "fixed_slots" and lam > 0:
        return -math.inf
    if mode not in ("mixture", "fixed_slots"):
        raise ValueError(f"mode must be 'mixture' or 'fixed_slots', got {mode!r}")
    return math.log1p(-lam) + math.log1p(-beta)


def inverse_batch_slope(batches: Sequence[int]) -> float:
    """The least-squares slope in B of ln(1/B) over a grid of batch sizes: what ``ln statistic`` against B reads
    when the statistic scales like 1/B (minibatch noise), whatever its constant."""
    b = np.asarray(batches, float)
    if len(b) < 2:
        return math.nan
    return float(np.polyfit(b, -np.log(b), 1)[0])
