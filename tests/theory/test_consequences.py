"""The consequences' theory (ptforget.theory.consequences) against independent computations: the exact population
flow (the KL's rate), scipy quadrature (misassignment), closed forms (integrals, fitted slopes) and Monte Carlo
(starvation)."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from ptforget.check.claims.starvation import baseline_batch, batch_slope
from ptforget.theory import fisher_condition_number, fisher_eigenvalues, population_flow, theta_star
from ptforget.theory.consequences import (
    flow_drift_and_misassignment,
    integrated,
    inverse_batch_slope,
    kl_rates,
    log_slope,
    misassignment_path,
    starvation_log_factor,
    stretch_rates,
    window_rate,
)


@pytest.mark.parametrize("delta,beta,h,steps", [(4.0, 0.5, 0.2, 400), (3.0, 0.2, 0.2, 1500), (2.0, 0.5, 0.5, 1500)])
def test_the_kl_falls_at_twice_the_parameters_rate_deep_in_the_exact_flows_approach(delta, beta, h, steps):
    """Deep in the approach the exact flow's ln KL falls by 2 ln rho per step and its parameter error by ln rho."""
    r = kl_rates(delta, beta, h)
    f = population_flow("rkl", delta, beta, None, 1.0, h, steps)
    deep = window_rate(f["step"], f["loss"], 1e-10, 1e-13)
    assert deep == pytest.approx(r["theory"], rel=2e-3)
    ts = theta_star(delta, beta)
    w = f["weight"]
    err = np.sqrt((np.log(w / (1 - w)) - float(ts["weight"])) ** 2 + f["old_mean_error"] ** 2
                  + f["new_mean_error"] ** 2)
    keep = (err < 1e-5) & (err > 1e-7)
    par = np.polyfit(f["step"][keep], np.log(err[keep]), 1)[0]
    assert par == pytest.approx(r["parameter"], rel=2e-3)
    assert r["theory"] == pytest.approx(2 * r["parameter"])


@pytest.mark.parametrize("delta,beta,h", [(2.0, 0.05, 0.2), (3.0, 0.2, 0.2), (4.0, 0.5, 0.05), (6.0, 0.2, 0.2),
                                          (6.0, 0.5, 0.2)])
def test_the_population_hessians_rate_over_the_stretch_is_the_exact_flows(delta, beta, h):
    """Over the stretch a run measures (KL 3e-3 -> 1e-4), the linearised GD at theta* from the flow's state there
    falls at the exact flow's rate (within 3%), much faster than 2 ln rho where the conditioning is poor."""
    r = stretch_rates(delta, beta, h, 1.0, beta, 3e-3, 1e-4)
    assert r["hessian"] == pytest.approx(r["flow"], rel=0.03)
    f = population_flow("rkl", delta, beta, None, 1.0, h, r["steps"])
    assert f["loss"][-1] <= 1e-4 < f["loss"][-2]


def test_the_rival_rate_is_that_of_the_mean_eigenvalue_and_kappa_is_the_fishers():
    for delta, beta in [(2.0, 0.05), (4.0, 0.2), (6.0, 0.5)]:
        ev = fisher_eigenvalues(delta, beta)
        r = kl_rates(delta, beta, 0.2)
        assert r["isotropic"] == pytest.approx(2 * math.log(abs(1 - 0.2 * ev.mean())), rel=1e-12)
        assert r["kappa"] == pytest.approx(fisher_condition_number(delta, beta), rel=1e-9)
        assert r["theory"] > r["isotropic"]  # ill-conditioned: slower than the kappa-free rate


def test_window_rate_reads_the_stretch_between_the_two_levels():
    t = np.arange(0, 200, 2.0)
    kl = 0.3 * np.exp(-0.05 * t)
    kl[t > 150] = 1e-6  # a floor after the stretch does not enter it
    assert window_rate(t, kl, 1e-2, 1e-3) == pytest.approx(-0.05, rel=1e-9)
    assert math.isnan(window_rate(t, kl, 1e-2, 1e-9))  # never reached
    assert math.isnan(window_rate(t[:3], kl[:3], 1.0, 0.2))  # fewer than 3 points


def _misassignment_quad(beta, mo, mn):
    def w_o(x):
        a = math.log(beta) + stats.norm.logpdf(x, mo)
        b = math.log(1 - beta) + stats.norm.logpdf(x, mn)
        return math.exp(a - np.logaddexp(a, b))

    val, _ = integrate.quad(lambda x: stats.norm.pdf(x, mn) * w_o(x), mn - 12, mn + 12, epsabs=0, epsrel=1e-11,
                            limit=400)
    return val


def test_misassignment_path_matches_quadrature():
    w, mo, mn = [0.5, 0.2, 0.05, 0.3], [-2.0, -1.5, -3.1, 0.0], [2.0, 1.2, 2.9, 5.5]
    got = misassignment_path(w, mo, mn)
    want = [_misassignment_quad(*a) for a in zip(w, mo, mn, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-14)


def test_integrated_is_h_times_the_time_integral():
    t = np.arange(0, 101, 5.0)
    assert integrated(t, np.full_like(t, 0.3), 0.2) == pytest.approx(0.2 * 0.3 * 100)
    assert integrated(t, 2 * t, 0.5) == pytest.approx(0.5 * 100**2)  # exact for a linear integrand
    assert integrated(t, 2 * t, 0.5, until=50) == pytest.approx(0.5 * 50**2)


def test_log_slope_recovers_a_power_law():
    m = np.array([0.5, 0.1, 0.03, 0.004])
    assert log_slope(m, 3.0 * m**0.6) == pytest.approx(0.6, rel=1e-12)
    assert math.isnan(log_slope([0.1, -1.0], [1.0, 2.0]))


def test_flow_drift_and_misassignment_reads_the_flows_sup():
    f = population_flow("rkl", 4.0, 0.5, None, 1.0, 0.2, 200)
    drift, m = flow_drift_and_misassignment(f, 0.2)
    i = int(np.argmax(f["old_mean_error"]))
    assert drift == f["old_mean_error"][i]
    path = [_misassignment_quad(w, a, b) for w, a, b in zip(f["weight"][:i + 1], f["old_mean"][:i + 1],
                                                            f["new_mean"][:i + 1], strict=True)]
    assert m == pytest.approx(0.2 * integrate.trapezoid(path, f["step"][:i + 1]), rel=1e-7)


@pytest.mark.parametrize("beta,lam,mode,B", [(0.05, 0.0, "mixture", 4), (0.2, 0.0, "mixture", 8),
                                             (0.05, 0.3, "mixture", 4), (0.2, 0.3, "mixture", 2)])
def test_starvation_factor_against_monte_carlo(beta, lam, mode, B):
    """P(no old sample in B draws from lam p_old + (1-lam) q, q's old mass beta) by simulation."""
    rng = np.random.default_rng(0)
    n = 200_000
    old = (rng.random((n, B)) < lam) | (rng.random((n, B)) < beta)
    p = float((~old.any(1)).mean())
    pred = math.exp(B * starvation_log_factor(beta, lam, mode))
    assert abs(p - pred) < 4 * math.sqrt(pred * (1 - pred) / n)


def test_fixed_slots_never_starve_and_bad_input_is_refused():
    assert starvation_log_factor(0.05, 0.3, "fixed_slots") == -math.inf
    with pytest.raises(ValueError, match="beta"):
        starvation_log_factor(1.2)
    with pytest.raises(ValueError, match="mode"):
        starvation_log_factor(0.1, 0.1, "slots")
    assert (1 - 0.05) ** baseline_batch(0.05) < 1e-4 <= (1 - 0.05) ** (baseline_batch(0.05) - 1)


def test_batch_slopes_of_the_two_laws():
    """A statistic c f^B has slope ln f in B; a statistic c / B has the rival's slope on the same grid."""
    b = [2, 4, 8, 16, 32]
    f = 0.95
    stats_ = np.array([[0.3 * f**B, 0.7 * f**B] for B in b])
    assert batch_slope(b, stats_) == pytest.approx([math.log(f)] * 2, rel=1e-9)
    inv = np.array([[0.3 / B, 2.0 / B] for B in b])
    assert batch_slope(b, inv) == pytest.approx([inverse_batch_slope(b)] * 2, rel=1e-9)
    assert math.isnan(batch_slope(b, -inv)[0])
