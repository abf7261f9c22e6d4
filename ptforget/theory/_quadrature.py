"""Fixed quadrature rules shared by the theory engine (float64, numpy only).

Composite Gauss-Legendre on a finite interval is used along the axis of the modes: the integrands there are
analytic with logistic "kinks" of width ~1/Delta, which a fixed Gauss-Hermite rule centred on one component
resolves poorly for large separations. Gauss-Hermite is used for directions in which every Gaussian is
(nearly) centred, where it is spectrally accurate.
"""

from __future__ import annotations

import math

import numpy as np

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def composite_gauss_legendre(
    lo: float, hi: float, panel: float = 0.5, order: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights approximating the Lebesgue integral over [lo, hi], panels of width <= ``panel``."""
    if not hi > lo:
        raise ValueError(f"quadrature interval must have hi > lo, got [{lo}, {hi}]")
    n_panels = max(1, math.ceil((hi - lo) / panel))
    edges = np.linspace(lo, hi, n_panels + 1)
    t, w = np.polynomial.legendre.leggauss(order)
    half = 0.5 * (edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * t[None, :]).ravel()
    weights = (half[:, None] * w[None, :]).ravel()
    return nodes, weights


def gauss_hermite_lebesgue(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes with weights for the plain Lebesgue integral over R.

    ``sum(w * f(z))`` approximates ``int f(z) dz`` for f = (smooth function) x (Gaussian-like decay).
    """
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w * np.exp(0.5 * z**2)


def gauss_hermite_normal(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and probability weights so that ``sum(w * f(z))`` approximates E f(Z), Z ~ N(0, 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / math.sqrt(2.0 * math.pi)


def logistic_normal_mean(s: float, a: float, log: bool = False) -> float:
    """E[sigmoid(s Z + a)] for Z ~ N(0, 1), accurate to ~1e-12 relative even when the value is tiny.

    The integrand phi(z) sigmoid(s z + a) has its mass between 0 and s, so a composite Gauss-Legendre rule on
    [min(0, s) - 13, max(0, s) + 13] with panels narrower than the logistic's pole distance pi/|s| is used.
    Returns the log of the value when ``log`` is True.
    """
    s = float(s)
    a = float(a)
    if s == 0.0:
        val = -np.logaddexp(0.0, -a)
        return float(val) if log else float(np.exp(val))
    panel = min(0.5, math.pi / abs(s))
    z, w = composite_gauss_legendre(min(0.0, s) - 13.0, max(0.0, s) + 13.0, panel=panel, order=16)
    logf = -0.5 * z**2 - LOG_SQRT_2PI - np.logaddexp(0.0, -(s * z + a))
    m = logf.max()
    val = m + math.log(float(np.sum(w * np.exp(logf - m))))
    return float(val) if log else float(math.exp(val))


def normal_cdf(x: float) -> float:
    """Standard normal CDF via erfc (accurate in the lower tail)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))
