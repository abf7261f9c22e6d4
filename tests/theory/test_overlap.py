"""Overlap quantities vs independent scipy quadrature, grid integration and Monte Carlo."""

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from ptforget.theory import (
    bhattacharyya,
    bhattacharyya_distance,
    bhattacharyya_gaussians,
    chi2_overlap,
    misassignment,
    misassignment_bound,
    misassignment_general,
)

DELTAS = np.linspace(0.5, 10.0, 8)
BETAS = np.array([0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99])


def _quad(f, lo, hi, points=None):
    val, _ = integrate.quad(f, lo, hi, points=points, epsabs=0.0, epsrel=1e-12, limit=500)
    return val


def _wrong_resp(x, delta, beta, direction):
    """Responsibility of the wrong component at x (1-D, means 0 and delta), computed from densities."""
    lo = math.log(beta) + stats.norm.logpdf(x)
    ln = math.log(1 - beta) + stats.norm.logpdf(x, loc=delta)
    return special.expit(ln - lo) if direction == "old_to_new" else special.expit(lo - ln)


def _boundary(delta, beta):
    return delta / 2 + math.log(beta / (1 - beta)) / delta


@pytest.mark.parametrize("delta", DELTAS)
def test_bc_matches_quadrature(delta):
    ref = _quad(lambda x: math.sqrt(stats.norm.pdf(x) * stats.norm.pdf(x, loc=delta)), -20, delta + 20,
                [delta / 2])
    assert bhattacharyya(delta) == pytest.approx(ref, rel=1e-9, abs=1e-300)
    assert bhattacharyya_distance(delta) == pytest.approx(-math.log(ref), rel=1e-8)


def test_bc_accepts_arrays_and_rejects_bad_input():
    out = bhattacharyya(np.array([0.0, 2.0]))
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    assert out[0] == 1.0 and out[1] == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="delta"):
        bhattacharyya(-1.0)


def test_bc_unequal_covariance_vs_grid():
    mu1, c1 = np.array([0.0, 0.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    mu2, c2 = np.array([1.5, -0.5]), np.array([[2.0, -0.4], [-0.4, 1.0]])
    g = np.linspace(-9, 10, 1201)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([X, Y], -1)
    p1 = stats.multivariate_normal(mu1, c1).pdf(pts)
    p2 = stats.multivariate_normal(mu2, c2).pdf(pts)
    ref = np.trapezoid(np.trapezoid(np.sqrt(p1 * p2), g, axis=1), g)
    assert bhattacharyya_gaussians(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)
    # 1-D with scalar variances
    ref1 = _quad(lambda x: math.sqrt(stats.norm.pdf(x, 0, 1.0) * stats.norm.pdf(x, 2.0, 3.0)), -40, 40)
    assert bhattacharyya_gaussians(0.0, 1.0, 2.0, 9.0) == pytest.approx(ref1, rel=1e-9)
    # equal covariance reduces to exp(-Delta^2/8) with Mahalanobis Delta
    s = np.array([[2.0, 0.5], [0.5, 1.0]])
    d2 = float(mu2 @ np.linalg.solve(s, mu2))
    assert bhattacharyya_gaussians(mu1, s, mu2, s) == pytest.approx(math.exp(-d2 / 8), rel=1e-12)


@pytest.mark.parametrize("direction", ["old_to_new", "new_to_old"])
def test_soft_misassignment_vs_quad(direction):
    for delta in DELTAS:
        for beta in BETAS:
            centre = 0.0 if direction == "old_to_new" else delta
            ref = _quad(lambda x, d=delta, b=beta, c=centre: stats.norm.pdf(x, loc=c) * _wrong_resp(x, d, b,
                        direction), -25, delta + 25, [_boundary(delta, beta), centre])
            got = misassignment(delta, beta, direction)
            assert abs(got - ref) <= 1e-6 * ref + 1e-14, (delta, beta, got, ref)


@pytest.mark.parametrize("direction", ["old_to_new", "new_to_old"])
def test_hard_misassignment_vs_root_finding(direction):
    for delta in DELTAS:
        for beta in BETAS:
            xb = optimize.brentq(lambda x, d=delta, b=beta: _wrong_resp(x, d, b, "old_to_new") - 0.5, -60, 60,
                                 xtol=1e-14)
            ref = stats.norm.sf(xb) if direction == "old_to_new" else stats.norm.cdf(xb, loc=delta)
            got = misassignment(delta, beta, direction, hard=True)
            assert abs(got - ref) <= 1e-6 * ref + 1e-14, (delta, beta, got, ref)


def test_r0_bounds_never_below_exact():
    for direction in ("old_to_new", "new_to_old"):
        soft = misassignment(DELTAS[:, None], BETAS[None, :], direction)
        hard = misassignment(DELTAS[:, None], BETAS[None, :], direction, hard=True)
        bound = misassignment_bound(DELTAS[:, None], BETAS[None, :], direction)
        assert soft.shape == (8, 8)
        assert np.all(soft <= bound) and np.all(hard <= bound)


def test_r0_table_from_paper():
    # paper.md §3.0 table (4 significant digits)
    rows = [(2, .5, .2248, .6065, .2248, .1587), (4, .1, .09283, .4060, .01031, .07343),
            (6, .01, 1.628e-2, 1.105e-1, 1.644e-4, 1.274e-2)]
    for d, b, mon, bnd, mno, hard in rows:
        assert misassignment(d, b) == pytest.approx(mon, rel=1e-3)
        assert misassignment_bound(d, b) == pytest.approx(bnd, rel=1e-3)
        assert misassignment(d, b, "new_to_old") == pytest.approx(mno, rel=1e-3)
        assert misassignment(d, b, hard=True) == pytest.approx(hard, rel=1e-3)


def test_misassignment_general_vs_grid_and_mc():
    mo, mn = np.array([0.3, -0.4]), np.array([2.5, 1.0])
    to, tn = np.array([0.0, 0.0]), np.array([3.0, 0.5])
    beta = 0.3
    g = np.linspace(-10, 13, 1501)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([X, Y], -1)
    lo = math.log(beta) - 0.5 * ((pts - mo) ** 2).sum(-1)
    ln = math.log(1 - beta) - 0.5 * ((pts - mn) ** 2).sum(-1)
    wn = special.expit(ln - lo)
    for direction, centre, w in (("old_to_new", to, wn), ("new_to_old", tn, 1 - wn)):
        dens = np.exp(-0.5 * ((pts - centre) ** 2).sum(-1)) / (2 * math.pi)
        ref = np.trapezoid(np.trapezoid(dens * w, g, axis=1), g)
        assert misassignment_general(mo, mn, beta, to, tn, direction) == pytest.approx(ref, rel=1e-8)
        hard_ref = np.trapezoid(np.trapezoid(dens * (w > 0.5), g, axis=1), g)
        assert misassignment_general(mo, mn, beta, to, tn, direction, hard=True) == pytest.approx(hard_ref,
                                                                                                  abs=2e-3)
    # 3-D Monte Carlo, 5 standard errors
    rng = np.random.default_rng(0)
    mo3, mn3, to3, tn3 = np.array([0, .5, 0]), np.array([2, 0, 1]), np.zeros(3), np.array([2.5, 0, 0.5])
    x = rng.standard_normal((400_000, 3)) + to3
    w = special.expit(math.log(0.6 / 0.4) - 0.5 * ((x - mn3) ** 2).sum(1) + 0.5 * ((x - mo3) ** 2).sum(1))
    got = misassignment_general(mo3, mn3, 0.4, to3, tn3, "old_to_new")
    assert abs(got - w.mean()) < 5 * w.std() / math.sqrt(len(w))
    # collinear truth reduces to the D4 formula
    assert misassignment_general([0], [4], 0.2, [0], [4]) == pytest.approx(misassignment(4, 0.2), rel=1e-12)


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_chi2_overlap_vs_quad(delta):
    ref = _quad(lambda x: stats.norm.pdf(x) ** 2 / stats.norm.pdf(x, loc=delta), -30 - delta, 30) - 1
    assert chi2_overlap(delta) == pytest.approx(ref, rel=1e-8)


def test_misassignment_rejects_bad_input():
    with pytest.raises(ValueError, match="beta"):
        misassignment(2.0, 1.0)
    with pytest.raises(ValueError, match="direction"):
        misassignment(2.0, 0.5, "sideways")
    with pytest.raises(ValueError, match="delta"):
        misassignment_bound(-2.0, 0.5)
