"""Overlap quantities of equal-covariance Gaussian modes (docs/theory.md: BC, misassignments, R0).

All positions are in whitened (Mahalanobis) units: Sigma = I after whitening, so the separation ``delta`` is
the Mahalanobis distance. Exact values use 1-D quadrature (the responsibilities depend on x only through
its projection on the line joining the two model means).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._quadrature import LOG_SQRT_2PI, composite_gauss_legendre, logistic_normal_mean, normal_cdf

DIRECTIONS = ("old_to_new", "new_to_old")


def _check_delta(delta: Any) -> np.ndarray:
    d = np.asarray(delta, dtype=np.float64)
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError(f"delta must be finite and >= 0, got {delta!r}")
    return d


def _check_beta(beta: Any, name: str = "beta") -> np.ndarray:
    b = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {beta!r}")
    return b


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def _out(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def bhattacharyya(delta: float | np.ndarray) -> float | np.ndarray:
    """BC of two equal-covariance Gaussians at Mahalanobis separation delta: exp(-delta^2 / 8)."""
    d = _check_delta(delta)
    return _out(np.exp(-(d**2) / 8.0))


def bhattacharyya_distance(delta: float | np.ndarray) -> float | np.ndarray:
    """Bhattacharyya distance D_B = -log BC = delta^2 / 8."""
    d = _check_delta(delta)
    return _out(d**2 / 8.0)


def hellinger_squared(delta: float | np.ndarray) -> float | np.ndarray:
    """Squared Hellinger distance H^2 = 2 (1 - BC) (convention H^2 = int (sqrt p - sqrt q)^2)."""
    return _out(2.0 * (1.0 - np.asarray(bhattacharyya(delta))))


def chi2_overlap(delta: float | np.ndarray) -> float | np.ndarray:
    """chi^2(p_o || p_n) = exp(delta^2) - 1, the rate constant of the forward-KL terminal regime (R3)."""
    d = _check_delta(delta)
    return _out(np.expm1(d**2))


def bhattacharyya_gaussians(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    """BC of N(mu1, cov1) and N(mu2, cov2) for arbitrary SPD covariances (scalars mean 1-D variances).

    D_B = (mu1-mu2)^T S^-1 (mu1-mu2) / 8 + log(det S / sqrt(det cov1 det cov2)) / 2 with S = (cov1+cov2)/2.
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    d = m1.shape[0]
    c1 = np.asarray(cov1, dtype=np.float64)
    c2 = np.asarray(cov2, dtype=np.float64)
    c1 = c1 * np.eye(d) if c1.ndim == 0 else np.atleast_2d(c1)
    c2 = c2 * np.eye(d) if c2.ndim == 0 else np.atleast_2d(c2)
    if m2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise ValueError("mu1, mu2 must have the same length d and cov1, cov2 must be d x d (or scalars)")
    s = 0.5 * (c1 + c2)
    diff = m1 - m2
    sign_s, logdet_s = np.linalg.slogdet(s)
    sign1, logdet1 = np.linalg.slogdet(c1)
    sign2, logdet2 = np.linalg.slogdet(c2)
    if min(sign_s, sign1, sign2) <= 0:
        raise ValueError("cov1 and cov2 must be positive definite")
    db = diff @ np.linalg.solve(s, diff) / 8.0 + 0.5 * (logdet_s - 0.5 * (logdet1 + logdet2))
    return float(np.exp(-db))


def _misassignment_scalar(s: float, shift: float, log_odds: float, hard: bool) -> float:
    """E or P for the logit  s Z + shift + log_odds  of the wrong component, Z ~ N(0, 1)."""
    a = shift + log_odds
    if hard:
        if s == 0.0:
            return 1.0 if a > 0 else 0.0
        return normal_cdf(a / s)
    return logistic_normal_mean(s, a)


def misassignment_general(
    mu_o: Any,
    mu_n: Any,
    beta: float,
    mu_true_o: Any,
    mu_true_n: Any,
    direction: str = "old_to_new",
    hard: bool = False,
) -> float:
    """Misassignment for arbitrary component means (whitened units, Sigma = I).

    old_to_new: E_{x~N(mu_true_o, I)}[w_n(x)]; new_to_old: E_{x~N(mu_true_n, I)}[w_o(x)], with the
    responsibilities of the model beta N(mu_o, I) + (1 - beta) N(mu_n, I). With u = mu_n - mu_o and
    c = (mu_o + mu_n)/2 the log-ratio log(phi_n/phi_o)(x) = u.(x - c) is N(u.(m - c), |u|^2) under
    x ~ N(m, I): an exact 1-D reduction.
    ``hard`` gives the probability that the wrong responsibility exceeds 1/2.
    """
    _check_direction(direction)
    b = float(_check_beta(beta))
    mo = np.atleast_1d(np.asarray(mu_o, dtype=np.float64))
    mn = np.atleast_1d(np.asarray(mu_n, dtype=np.float64))
    to = np.atleast_1d(np.asarray(mu_true_o, dtype=np.float64))
    tn = np.atleast_1d(np.asarray(mu_true_n, dtype=np.float64))
    if not (mo.shape == mn.shape == to.shape == tn.shape) or mo.ndim != 1:
        raise ValueError("mu_o, mu_n, mu_true_o, mu_true_n must be vectors of the same length")
    u = mn - mo
    c = 0.5 * (mo + mn)
    s = float(np.linalg.norm(u))
    if direction == "old_to_new":  # logit of w_n under the old mode
        return _misassignment_scalar(s, float(u @ (to - c)), math.log((1 - b) / b), hard)
    # logit of w_o = -(u.(x-c)) + log(b/(1-b)) under the new mode; -u.(x - c) ~ N(-u.(m - c), s^2)
    return _misassignment_scalar(s, float(-u @ (tn - c)), math.log(b / (1 - b)), hard)


def misassignment(
    delta: float | np.ndarray, beta: float | np.ndarray, direction: str = "old_to_new", hard: bool = False
) -> float | np.ndarray:
    """Exact misassignment probability at the true means (D4), by 1-D logistic-normal quadrature.

    old_to_new: m_{o->n} = E_Z sigmoid(delta Z - delta^2/2 + log((1-beta)/beta)); new_to_old swaps the odds.
    hard=True: P(wrong responsibility > 1/2) = Phi(-delta/2 + log(odds)/delta). Broadcasts over arrays.
    """
    _check_direction(direction)
    d = _check_delta(delta)
    b = _check_beta(beta)
    dd, bb = np.broadcast_arrays(d, b)
    out = np.empty(dd.shape, dtype=np.float64)
    for idx in np.ndindex(dd.shape):
        s, bt = float(dd[idx]), float(bb[idx])
        lo = math.log((1 - bt) / bt) if direction == "old_to_new" else math.log(bt / (1 - bt))
        out[idx] = _misassignment_scalar(s, -0.5 * s * s, lo, hard)
    return _out(out)


def misassignment_bound(
    delta: float | np.ndarray, beta: float | np.ndarray, direction: str = "old_to_new"
) -> float | np.ndarray:
    """R0 bound: m_{o->n} <= sqrt((1-beta)/beta) BC and m_{n->o} <= sqrt(beta/(1-beta)) BC (soft and hard)."""
    _check_direction(direction)
    d = _check_delta(delta)
    b = _check_beta(beta)
    odds = (1 - b) / b if direction == "old_to_new" else b / (1 - b)
    return _out(np.sqrt(odds) * np.exp(-(d**2) / 8.0))


def bhattacharyya_quadrature(delta: float) -> float:
    """BC of N(0, 1) and N(delta, 1) by 1-D Gauss-Legendre quadrature of sqrt(phi_0 phi_delta) (checks P17)."""
    d = float(_check_delta(delta))
    x, v = composite_gauss_legendre(-13.0, d + 13.0, 0.5, 12)
    return float(np.sum(v * np.exp(-0.25 * x**2 - 0.25 * (x - d) ** 2 - LOG_SQRT_2PI)))
