"""Population objectives, gradients and local geometry vs scipy quadrature, grids, finite differences, MC."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from ptforget.theory import (
    PopulationSpec,
    fisher_condition_number,
    fisher_information,
    hessian_at_optimum,
    population_gradient,
    population_loss,
    replay_importance_stats,
)
from ptforget.theory.population import AxisEngine


def _beta(w, weight):
    return special.expit(w) if weight == "logit" else w


def _ref_density_1d(spec, objective):
    comps = spec.reference(objective)
    return lambda x: sum(w * stats.norm.pdf(x, loc=a) for w, a in comps)


def _loss_quad_1d(objective, w, mo, mn, spec):
    b = _beta(w, spec.weight)
    p = _ref_density_1d(spec, objective)

    def q(x):
        return b * stats.norm.pdf(x, loc=mo) + (1 - b) * stats.norm.pdf(x, loc=mn)

    if objective == "fkl":
        def f(x):
            return p(x) * (math.log(p(x)) - math.log(q(x)))
    else:
        def f(x):
            return q(x) * (math.log(q(x)) - math.log(p(x)))
    lo, hi = min(0.0, mo, mn) - 25, max(spec.delta, mo, mn) + 25
    val, _ = integrate.quad(f, lo, hi, points=sorted({0.0, mo, mn, spec.delta}), epsabs=1e-14, epsrel=1e-12,
                            limit=400)
    return val


CASES_1D = [
    ("fkl", PopulationSpec(3.0, 0.5, 1, "logit"), 0.4, 0.3, 2.2),
    ("fkl", PopulationSpec(5.0, 0.3, 1, "direct", replay=0.3), 0.25, -0.2, 4.1),
    ("fkl", PopulationSpec(2.0, 0.4, 1, "logit", replay=0.2, replay_source="q0", beta0=0.6, new_offset=1.0),
     -0.5, 0.5, 1.3),
    ("rkl", PopulationSpec(3.0, 0.5, 1, "logit"), 0.2, 0.4, 2.0),
    ("rkl", PopulationSpec(6.0, 0.2, 1, "direct"), 0.35, -0.3, 5.0),
]


@pytest.mark.parametrize("objective,spec,w,mo,mn", CASES_1D)
def test_loss_1d_vs_scipy_quad(objective, spec, w, mo, mn):
    got = float(population_loss(objective, {"weight": w, "old": [mo], "new": [mn]}, spec))
    ref = _loss_quad_1d(objective, w, mo, mn, spec)
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-12)


def _fd_grad(objective, params, spec, eps=1e-5):
    out = {}
    for k in ("weight", "old", "new"):
        base = np.atleast_1d(np.asarray(params[k], dtype=float))
        g = np.zeros_like(base)
        for i in range(base.size):
            vals = []
            for s in (1, -1):
                pert = {kk: np.array(vv, dtype=float) for kk, vv in params.items()}
                arr = np.atleast_1d(pert[k]).copy()
                arr[i] += s * eps
                pert[k] = arr.reshape(np.shape(params[k]))
                vals.append(float(population_loss(objective, pert, spec)))
            g[i] = (vals[0] - vals[1]) / (2 * eps)
        out[k] = g
    return out


@pytest.mark.parametrize("objective,spec,w,mo,mn", CASES_1D)
def test_gradient_1d_vs_finite_differences_and_axis_engine(objective, spec, w, mo, mn):
    params = {"weight": w, "old": [mo], "new": [mn]}
    g = population_gradient(objective, params, spec)
    fd = _fd_grad(objective, params, spec)
    for k in ("weight", "old", "new"):
        assert np.allclose(np.atleast_1d(g[k]), fd[k], rtol=1e-6, atol=1e-8), (k, g[k], fd[k])
    eng = AxisEngine.covering(objective, spec, [mo, mn])
    loss, gw, gmo, gmn = eng.evaluate(w, mo, mn)
    assert loss == pytest.approx(float(g["loss"]), rel=1e-10, abs=1e-13)
    assert np.allclose([gw, gmo, gmn], [float(g["weight"]), g["old"][0], g["new"][0]], rtol=1e-9, atol=1e-12)


def _grid_loss_2d(objective, spec, w, mo, mn):
    b = _beta(w, spec.weight)
    g = np.linspace(-11, spec.delta + 11, 1201)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([X, Y], -1)

    def phi(m):
        return np.exp(-0.5 * ((pts - m) ** 2).sum(-1)) / (2 * math.pi)

    p = sum(wt * phi(np.array([a, 0.0])) for wt, a in spec.reference(objective))
    q = b * phi(np.asarray(mo)) + (1 - b) * phi(np.asarray(mn))
    f = p * (np.log(p) - np.log(q)) if objective == "fkl" else q * (np.log(q) - np.log(p))
    return np.trapezoid(np.trapezoid(f, g, axis=1), g)


@pytest.mark.parametrize("objective,weight,replay", [("fkl", "logit", 0.0), ("fkl", "direct", 0.2),
                                                     ("rkl", "logit", 0.0), ("rkl", "direct", 0.0)])
def test_noncollinear_2d_loss_vs_grid_and_gradient_vs_fd(objective, weight, replay):
    spec = PopulationSpec(3.0, 0.4, 2, weight, replay=replay)
    w = 0.3 if weight == "logit" else 0.45
    mo, mn = [0.4, 0.7], [2.2, -0.8]
    params = {"weight": w, "old": mo, "new": mn}
    got = float(population_loss(objective, params, spec))
    assert got == pytest.approx(_grid_loss_2d(objective, spec, w, mo, mn), rel=1e-7)
    g = population_gradient(objective, params, spec)
    fd = _fd_grad(objective, params, spec)
    for k in ("weight", "old", "new"):
        assert np.allclose(np.atleast_1d(g[k]), fd[k], rtol=1e-6, atol=1e-8), (k, g[k], fd[k])


def test_3d_loss_vs_monte_carlo_and_rotation_invariance():
    spec = PopulationSpec(2.5, 0.4, 3, "logit", replay=0.2)
    mo, mn, w = np.array([0.3, 0.6, 0.0]), np.array([2.0, 0.0, -0.7]), 0.2
    got = float(population_loss("fkl", {"weight": w, "old": mo, "new": mn}, spec))
    rng = np.random.default_rng(1)
    n = 400_000
    comp = rng.random(n) < 0.2
    x = rng.standard_normal((n, 3))
    x[:, 0] += np.where(comp, 0.0, 2.5)
    logp = np.logaddexp(math.log(0.2) - 0.5 * (x**2).sum(1),
                        math.log(0.8) - 0.5 * ((x - [2.5, 0, 0]) ** 2).sum(1))
    b = special.expit(w)
    logq = np.logaddexp(math.log(b) - 0.5 * ((x - mo) ** 2).sum(1), math.log(1 - b) - 0.5 * ((x - mn) ** 2).sum(1))
    v = logp - logq
    assert abs(got - v.mean()) < 5 * v.std() / math.sqrt(n)
    # rotating the orthogonal complement of e1 leaves the loss unchanged
    rot = np.array([[1, 0, 0], [0, 0.6, -0.8], [0, 0.8, 0.6]])
    got_rot = float(population_loss("fkl", {"weight": w, "old": rot @ mo, "new": rot @ mn}, spec))
    assert got_rot == pytest.approx(got, rel=1e-10)


def test_collinear_loss_independent_of_dim():
    s1, s3 = PopulationSpec(4.0, 0.3, 1, "logit"), PopulationSpec(4.0, 0.3, 3, "logit")
    a = float(population_loss("rkl", {"weight": 0.1, "old": [0.2], "new": [3.1]}, s1))
    b = float(population_loss("rkl", {"weight": 0.1, "old": [0.2, 0, 0], "new": [3.1, 0, 0]}, s3))
    assert a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("weight", ["logit", "direct"])
@pytest.mark.parametrize("delta,beta,dim", [(2.0, 0.5, 1), (3.0, 0.2, 2), (4.0, 0.35, 3)])
def test_hessian_equals_fisher_at_optimum(weight, delta, beta, dim):
    H = hessian_at_optimum(delta, beta, weight, dim)
    F = fisher_information(delta, beta, weight, dim)
    assert H.shape == (1 + 2 * dim,) * 2
    assert np.abs(H - F).max() < 1e-8
    assert np.all(np.linalg.eigvalsh(F) > 0)


def test_fisher_vs_monte_carlo_scores():
    delta, b = 2.5, 0.3
    F = fisher_information(delta, b, "logit", 1)
    rng = np.random.default_rng(2)
    n = 400_000
    x = rng.standard_normal(n) + np.where(rng.random(n) < b, 0.0, delta)
    wo = special.expit(math.log(b / (1 - b)) - 0.5 * x**2 + 0.5 * (x - delta) ** 2)
    S = np.stack([wo - b, wo * x, (1 - wo) * (x - delta)], 1)
    outer = S[:, :, None] * S[:, None, :]
    mc, se = outer.mean(0), outer.std(0) / math.sqrt(n)
    assert np.all(np.abs(F - mc) < 5 * se + 1e-12)


def test_condition_numbers_match_paper_r8_table():
    table = {(0.5, 1): 320, (0.5, 2): 11.4, (0.5, 3): 3.6, (0.5, 4): 2.26, (0.5, 6): 2.01, (0.2, 3): 10.5,
             (0.2, 4): 6.0, (0.2, 6): 4.98, (0.05, 3): 74, (0.05, 4): 34, (0.05, 6): 20.5}
    for (b, d), k in table.items():
        assert fisher_condition_number(d, b) == pytest.approx(k, rel=0.02), (b, d)


def test_fisher_separated_limit_and_sigma_scaling():
    b = 0.3
    F = fisher_information(12.0, b, "logit", 2)
    assert np.allclose(np.diag(F), [b * (1 - b), b, b, 1 - b, 1 - b], atol=1e-6)
    assert np.abs(F - np.diag(np.diag(F))).max() < 1e-6
    Fd = fisher_information(12.0, b, "direct", 1)
    assert Fd[0, 0] == pytest.approx(1 / (b * (1 - b)), rel=1e-6)
    F2 = fisher_information(3.0, b, "logit", 1, sigma=2.0)
    F1 = fisher_information(3.0, b, "logit", 1)
    assert F2[1, 1] == pytest.approx(F1[1, 1] / 4) and F2[0, 1] == pytest.approx(F1[0, 1] / 2)


@pytest.mark.parametrize("source", ["p_old", "q0"])
def test_replay_is_bounds_and_unbiased_mc(source):
    delta, bs, lam, b0, off = 3.0, 0.4, 0.3, 0.4, 1.0
    st = replay_importance_stats(delta, bs, lam, b0, off, source)
    assert st["sup_weight"] <= st["weight_bound"] * (1 + 1e-12)
    assert 1.0 <= st["second_moment_ratio"] <= st["variance_inflation_bound"]
    # IS estimator E_rho[omega s (log q - log p*)] equals the exact reverse-KL gradient
    mo, mn = 0.0, delta - off
    rng = np.random.default_rng(3)
    n = 400_000
    from_rep = rng.random(n) < lam
    if source == "p_old":
        rep_x = rng.standard_normal(n)
    else:
        rep_x = rng.standard_normal(n) + np.where(rng.random(n) < b0, mo, mn)
    q_x = rng.standard_normal(n) + np.where(rng.random(n) < b0, mo, mn)
    x = np.where(from_rep, rep_x, q_x)
    q = b0 * stats.norm.pdf(x, mo) + (1 - b0) * stats.norm.pdf(x, mn)
    rep = stats.norm.pdf(x) if source == "p_old" else q
    omega = q / (lam * rep + (1 - lam) * q)
    ps = bs * stats.norm.pdf(x) + (1 - bs) * stats.norm.pdf(x, delta)
    wo = b0 * stats.norm.pdf(x, mo) / q
    f = np.log(q) - np.log(ps)
    G = omega[:, None] * f[:, None] * np.stack([wo - b0, wo * (x - mo), (1 - wo) * (x - mn)], 1)
    exact = population_gradient("rkl", {"weight": math.log(b0 / (1 - b0)), "old": [mo], "new": [mn]},
                                PopulationSpec(delta, bs, 1, "logit"))
    ex = np.array([float(exact["weight"]), exact["old"][0], exact["new"][0]])
    assert np.all(np.abs(G.mean(0) - ex) < 5 * G.std(0) / math.sqrt(n))
    assert omega.max() <= 1 / (1 - lam) + 1e-12


def test_population_rejects_bad_input():
    with pytest.raises(ValueError, match="replay"):
        PopulationSpec(2.0, replay=1.0)
    with pytest.raises(ValueError, match="weight"):
        PopulationSpec(2.0, weight="softmax")
    with pytest.raises(ValueError, match="objective"):
        population_loss("js", {"weight": 0.0, "old": [0.0], "new": [1.0]}, PopulationSpec(2.0))
    with pytest.raises(ValueError, match="dim"):
        PopulationSpec(2.0, dim=0)
    with pytest.raises(ValueError, match="beta_star"):
        fisher_information(2.0, 0.0)
    assert isinstance(population_loss("rkl", {"weight": torch.tensor(0.0), "old": [0.0], "new": [2.0]},
                                      PopulationSpec(2.0)), torch.Tensor)
