"""ptforget.theory.estimators against independent computations (the real estimators and objectives sampled by Monte
Carlo, brute-force simulation, or the engine's quadrature)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ptforget.theory.estimators as pt

torch.set_num_threads(1)


def _gmm(delta, beta_star=0.5, new_offset=1.0, eta=None, mo=None, mn=None):
    """1-D task and GaussianMixture with parameters in the proposal's coordinates (mu_o* = 0, mu_n* = delta)."""
    from ptforget.generators import GaussianMixture
    from ptforget.tasks import TwoModeTask

    task = TwoModeTask(dim=1, delta=delta, beta_star=beta_star, new_offset=new_offset)
    gen = GaussianMixture(task)
    with torch.no_grad():
        if eta is not None:
            gen.weight_param.fill_(eta)
        if mo is not None:
            gen.mu_old.fill_(mo - delta / 2)
        if mn is not None:
            gen.mu_rest.fill_(mn - delta / 2)
    return task, gen


def _grads(gen):
    return np.array([float(gen.weight_param.grad.reshape(-1)[0]), float(gen.mu_old.grad.reshape(-1)[0]),
                     float(gen.mu_rest.grad.reshape(-1)[0])])


def _sampled_grads(gen, obj, draws: int) -> np.ndarray:
    """(draws, 3) autograd gradients of ``obj``'s loss in (logit weight, mu_o, mu_n), one fresh batch each."""
    out = []
    for _ in range(draws):
        gen.zero_grad()
        obj.loss(gen, 0)[0].backward()
        out.append(_grads(gen))
    return np.array(out)


# ----------------------------------------------------------------------------------------------- P10
def test_enumerate_mean_is_exact_population_gradient():
    from ptforget.theory import PopulationSpec, population_gradient

    for delta, th in ((4.0, (0.2, 0.05, 3.3)), (6.0, (-0.3, -0.02, 5.1))):
        g = population_gradient("rkl", {"weight": th[0], "old": [th[1]], "new": [th[2]]},
                                PopulationSpec(delta, 0.5, 1, "logit"))
        m, _ = pt.rkl_enumerate_grad_cov(delta, 0.5, *th, 16384)
        np.testing.assert_allclose(m, [g["weight"], g["old"][0], g["new"][0]], rtol=1e-6, atol=1e-9)


def test_enumerate_covariance_matches_the_real_estimator():
    """Empirical covariance of the project's ReverseKL(enumerate) gradient over 1500 draws vs the formula."""
    from ptforget.objectives import ReverseKL

    torch.manual_seed(0)
    delta, th, batch = 4.0, (0.1, 0.03, 3.2), 512
    task, gen = _gmm(delta, eta=th[0], mo=th[1], mn=th[2])
    obj = ReverseKL(batch=batch, estimator="enumerate")
    obj.setup(gen, task)
    G = _sampled_grads(gen, obj, 1500)
    m, C = pt.rkl_enumerate_grad_cov(delta, 0.5, *th, batch)
    # mean within 4 standard errors; variances within 4 standard errors of a sample variance (sqrt(2/N))
    se = G.std(0, ddof=1) / math.sqrt(len(G))
    assert np.all(np.abs(G.mean(0) - m) < 4 * se + 1e-5)
    emp = np.var(G, 0, ddof=1)
    assert np.all(np.abs(emp / np.diag(C) - 1) < 4 * math.sqrt(2 / len(G))), (emp, np.diag(C))


def _brute_force_sgd(delta, new_offset, lr, steps, batch, eval_every, R=400, seed=0):
    """R independent SGD runs of the enumerate estimator, written directly with torch autograd (not the LNA)."""
    g = torch.Generator().manual_seed(seed)
    n = math.ceil(batch / 2)
    th = torch.zeros(R, 3, dtype=torch.float64)
    th[:, 2] = delta - new_offset
    lps = torch.tensor([math.log(0.5), math.log(0.5)], dtype=torch.float64)
    cps = torch.tensor([0.0, delta], dtype=torch.float64)
    rec = []
    for t in range(steps + 1):
        if t % eval_every == 0:
            rec.append(th[:, 1].clone())
        if t == steps:
            break
        th.requires_grad_(True)
        eps = torch.randn(R, 2, n, generator=g, dtype=torch.float64)
        logb = torch.stack([-torch.nn.functional.softplus(-th[:, 0]), -torch.nn.functional.softplus(th[:, 0])], 1)
        mu = th[:, 1:]
        x = mu[:, :, None] + eps                                            # (R, 2, n)
        lq = torch.logsumexp(logb[:, :, None, None] - 0.5 * (x[:, None] - mu[:, :, None, None]) ** 2, 1)
        lp = torch.logsumexp(lps[None, :, None, None] - 0.5 * (x[:, None] - cps[None, :, None, None]) ** 2, 1)
        loss = (logb.exp() * (lq - lp).mean(2)).sum()
        (gr,) = torch.autograd.grad(loss, th)
        th = (th - lr * gr).detach()
    return torch.stack(rec, 1).numpy()                                      # (R, evals)


@pytest.mark.slow  # tens of seconds of brute-force sampling: run with make test-all
def test_lna_sup_drift_matches_brute_force_sgd():
    delta, off, lr, steps, batch, ev = 4.0, 1.0, 0.2, 120, 1024, 2
    P = _brute_force_sgd(delta, off, lr, steps, batch, ev)
    pred = pt.rkl_sgd_drift(delta, 0.5, off, lr, steps, batch, ev, n_mc=4000)
    sup = np.abs(P).max(1)
    se = sup.std(ddof=1) / math.sqrt(len(sup))
    assert abs(sup.mean() - pred.mean_sup) < 4 * se + 4 * pred.mc_se_mean_sup, (sup.mean(), pred.mean_sup)
    assert abs(sup.std(ddof=1) / pred.sd_sup - 1) < 0.15
    sd_end = P[:, -1].std(ddof=1)
    assert abs(sd_end / pred.sd_drift[-1] - 1) < 0.15, (sd_end, pred.sd_drift[-1])
    # the noise raises the sup above the flow's: a real effect at this batch, not a rounding
    assert pred.mean_sup - pred.flow_sup > 5 * (se + pred.mc_se_mean_sup)
    # the signed drift read at the flow's argmax step is unbiased for the flow
    j = list(pred.steps).index(pred.flow_argmax)
    assert abs(P[:, j].mean() - pred.flow_drift[j]) < 4 * P[:, j].std(ddof=1) / math.sqrt(len(P))


def test_noise_floor_closed_form_matches_lna_at_theta_star():
    for batch in (4096, 16384, 65536):
        p = pt.rkl_sgd_drift(8.0, 0.5, 0.0, 0.2, 300, batch, 2, n_mc=500)
        assert abs(p.stationary_sd / pt.rkl_noise_floor_sd(0.5, 0.2, batch) - 1) < 0.02
        assert p.flow_sup < 1e-12  # started at theta*: the exact drift is identically 0


# ----------------------------------------------------------------------------------------------- P11
def test_quasi_static_drift_is_the_frozen_flow_limit():
    from ptforget.theory import population_flow

    for b in (0.2, 0.5):
        fl = population_flow("rkl", 4.0, b, b, 1.0, 1.0, int(60 / b), weight="logit", dim=1,
                             lr_mult={"weight": 0.0, "old": 1.0, "new": 0.0})
        assert abs(fl["old_mean"][-1] - pt.quasi_static_drift(4.0, b)) < 1e-7
    r4 = pt.quasi_static_drift(4.0, 0.2) / pt.quasi_static_drift(4.0, 0.5)
    r8 = pt.quasi_static_drift(8.0, 0.2) / pt.quasi_static_drift(8.0, 0.5)
    assert r4 < r8 < 2.0  # approaches the sqrt((1-b)/b) law (ratio 2) from below as Delta grows


# ----------------------------------------------------------------------------------------------- P15
def test_loo_inverse_mean_monte_carlo():
    rng = np.random.default_rng(0)
    for p, K in ((0.8, 8), (0.3, 64)):
        r = rng.random((400000, K - 1)) < p
        z = 1 + (math.e - 1) * r.mean(1)
        mc = (1 / z).mean()
        assert abs(mc - pt.loo_inverse_mean(p, K, 1.0)) < 4 * (1 / z).std() / math.sqrt(len(z))


def test_two_atom_population_limit_is_r12():
    from ptforget.theory import ttt_fixed_point

    for g, lam in ((1.0, 0.5), (5.0, 0.5), (2.0, 2.0)):
        assert abs(pt.ttt_two_atom_fixed_point(g, lam, 0.5) - ttt_fixed_point(g, lam, 0.0, 1.0, 0.5)) < 1e-9


def test_two_atom_finite_k_fixed_point_zeroes_the_real_advantage():
    """Monte Carlo of the project's LOO entropic advantage + KL term on categorical samples (K = 8, N = 32)."""
    from ptforget.objectives.ttt_discover import entropic_advantages

    torch.manual_seed(0)
    K, G, lam, groups = 8, 4, 0.5, 150000

    def mean_As(beta):
        r = (torch.rand(groups, G, K, dtype=torch.float64) > beta).double()   # r = 1: new atom
        A = entropic_advantages(r.reshape(-1, K), torch.ones(groups * G, dtype=torch.float64)).reshape(groups, G * K)
        d = torch.where(r.reshape(groups, -1) > 0, math.log((1 - beta) / 0.5), math.log(beta / 0.5))
        A = A + lam * (d.mean(1, keepdim=True) - d)
        s = (r.reshape(groups, -1) == 0).double() - beta                      # d log q / d eta
        v = (A * s).mean(1)
        return float(v.mean()), float(v.std() / math.sqrt(groups))

    b_k = pt.ttt_two_atom_fixed_point(1.0, lam, 0.5, K, K * G)
    m, se = mean_As(b_k)
    assert abs(m) < 4 * se, (m, se)
    m_pop, se_pop = mean_As(pt.ttt_two_atom_fixed_point(1.0, lam, 0.5))
    assert abs(m_pop) > 6 * se_pop  # the population formula is not the estimator's fixed point


@pytest.mark.slow  # tens of seconds of brute-force sampling: run with make test-all
def test_ttt_expected_gradient_matches_the_real_objective():
    """Average gradient of the project's TTTDiscover loss (1-D GMM) over many draws vs -E[A s]."""
    from ptforget.objectives.ttt_discover import TTTDiscover

    torch.manual_seed(1)
    delta, th = 6.0, (-1.2, -0.05, 5.1)
    task, gen = _gmm(delta)
    obj = TTTDiscover(groups=4, group_size=16, reward="new_region", beta=1.0, lam=0.5)
    obj.setup(gen, task)  # q0 = the generator at setup (beta0 = 0.5, mu_n = delta - 1)
    with torch.no_grad():
        gen.weight_param.fill_(th[0])
        gen.mu_old.fill_(th[1] - delta / 2)
        gen.mu_rest.fill_(th[2] - delta / 2)
    G = _sampled_grads(gen, obj, 3000)
    pred = -pt.ttt_expected_gradient(np.array(th), 1.0, 0.5, delta, K=16, n_batch=64)
    se = G.std(0, ddof=1) / math.sqrt(len(G))
    assert np.all(np.abs(G.mean(0) - pred) < 4 * se), (G.mean(0), pred, se)
    pop = -pt.ttt_expected_gradient(np.array(th), 1.0, 0.5, delta, K=None, n_batch=None)
    assert abs(G.mean(0)[0] - pop[0]) > 4 * se[0]  # finite K and the batch-mean baseline are visible


# ----------------------------------------------------------------------------------------------- P16
def test_oapl_group_targets_monte_carlo():
    from ptforget.objectives.oapl import v_star

    torch.manual_seed(0)
    p, G, tau = 0.4, 16, 2.0
    r = (torch.rand(400000, G, dtype=torch.float64) < p).double()
    v = v_star(r, tau)
    v0, v1 = pt.oapl_group_targets(p, G, tau)
    for val, mask in ((v0, r[:, 0] == 0), (v1, r[:, 0] == 1)):
        s = v[mask]
        assert abs(float(s.mean()) - val) < 4 * float(s.std()) / math.sqrt(len(s))


def test_oapl_exact_v_gives_r13():
    assert abs(pt.oapl_two_atom_shift(0.3, 2.0, None) + 0.5) < 1e-9
    w = pt.oapl_weights(0.5, 4, 2.0, 12.0, G=None, family="gmm")  # separated, exact V*: R13
    np.testing.assert_allclose(w["shift"], -0.5, atol=2e-4)


@pytest.mark.slow  # tens of seconds of brute-force sampling: run with make test-all
def test_oapl_sync_map_zeroes_the_real_loss_gradient():
    """The project's OAPL loss (lag = q0), gradient averaged over draws, vanishes at the predicted minimiser and
    not at R13's point (logit - 1/tau with the means unchanged)."""
    from ptforget.objectives.oapl import OAPL

    torch.manual_seed(2)
    delta, tau = 6.0, 2.0
    task, gen = _gmm(delta)
    obj = OAPL(groups=16, group_size=16, beta1=tau, lag=None, reward="new_region")
    obj.setup(gen, task)
    th_lag = np.array([0.0, 0.0, delta - 1.0])
    th_pred = pt.oapl_sync_map(th_lag, tau, delta, G=16)

    def mean_grad(th, draws=3000):
        with torch.no_grad():
            gen.weight_param.fill_(th[0])
            gen.mu_old.fill_(th[1] - delta / 2)
            gen.mu_rest.fill_(th[2] - delta / 2)
        G = _sampled_grads(gen, obj, draws)
        return G.mean(0), G.std(0, ddof=1) / math.sqrt(len(G))

    m, se = mean_grad(th_pred)
    assert np.all(np.abs(m) < 4 * se), (m, se)
    m13, se13 = mean_grad(np.array([-1.0 / tau, 0.0, delta - 1.0]))
    assert abs(m13[0]) > 6 * se13[0]


# ----------------------------------------------------------------------------------------------- P14
def _sdft_sim(alpha=0.01, kappa=10.0, m=8, d=2, pool=256, lr=0.01, n=128, steps=1200, R=48, seed=0):
    """Separated-mode SDFT-ICL abstraction, simulated with torch-equivalent Adam (independent of the formula)."""
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((R, pool, d))
    f = m / (kappa + m)
    th = [np.zeros(R), np.zeros((R, d)), P.mean(1).copy()]
    ph = [x.copy() for x in th]
    mom = [np.zeros_like(x) for x in th]
    vel = [np.zeros_like(x) for x in th]
    out = np.zeros((steps + 1, R))
    for t in range(1, steps + 1):
        dbar = np.take_along_axis(P, rng.integers(0, pool, (R, m))[..., None], 1).mean(1)
        mu_t = ph[2] + f * (dbar - ph[2])
        b, bt = 1 / (1 + np.exp(-th[0])), 1 / (1 + np.exp(-ph[0]))
        do, dn = th[1] - ph[1], th[2] - mu_t
        uo, un = rng.standard_normal((R, d)) / math.sqrt(n), rng.standard_normal((R, d)) / math.sqrt(n)
        fo = np.log(b / bt) + 0.5 * (do**2).sum(1) + (uo * do).sum(1)
        fn = np.log((1 - b) / (1 - bt)) + 0.5 * (dn**2).sum(1) + (un * dn).sum(1)
        grads = [b * (1 - b) * (fo - fn), b[:, None] * (do + uo), (1 - b)[:, None] * (dn + un)]
        for i in range(3):
            mom[i] = 0.9 * mom[i] + 0.1 * grads[i]
            vel[i] = 0.999 * vel[i] + 0.001 * grads[i] ** 2
            th[i] = th[i] - lr * (mom[i] / (1 - 0.9**t)) / (np.sqrt(vel[i] / (1 - 0.999**t)) + 1e-8)
            ph[i] = (1 - alpha) * ph[i] + alpha * th[i]
        out[t] = th[0]
    tt = np.arange(steps + 1)
    keep = tt >= 400
    s = np.array([np.polyfit(tt[keep], out[keep, r], 1)[0] for r in range(R)])
    return s.mean(), s.std(ddof=1) / math.sqrt(R)


@pytest.mark.parametrize("kw", [{}, {"m": 64}, {"d": 1}, {"alpha": 0.03}])
def test_icl_ratchet_rate_matches_the_abstraction_simulated_with_adam(kw):
    mu, se = _sdft_sim(**kw)
    a, k, m, d = kw.get("alpha", 0.01), kw.get("kappa", 10.0), kw.get("m", 8), kw.get("d", 2)
    pred = pt.sdft_icl_ratchet_rate(a, k, m, d, adam_lr=0.01, batch=256)
    assert abs(mu - pred) < 4 * se + 0.03 * pred, (mu, se, pred)  # 3%: the closed form's small-lr limits


def test_icl_population_flow_ratchet_and_no_jitter_limit():
    # no jitter (kappa -> inf), started at theta*: nothing moves
    fl = pt.sdft_icl_population_flow(8.0, 0.0, 0.2, 100, kappa=1e9)
    assert abs(fl["weight"][-1] - 0.5) < 1e-9 and abs(fl["old_mean"][-1]) < 1e-9
    # separated, offset 0: the logit rises at the SGD-tracking version of alpha E|eps|^2 / 2
    steps, lr, alpha = 800, 0.2, 0.01
    fl = pt.sdft_icl_population_flow(10.0, 0.0, lr, steps, alpha_ema=alpha)
    eta = np.log(fl["weight"] / (1 - fl["weight"]))
    slope = np.polyfit(fl["step"][200:], eta[200:], 1)[0]
    c = 0.5 * pt.sdft_icl_jitter(10.0, 8, 1)
    a = lr * 0.25  # SGD: the logit gradient is b (1 - b) (eta - eta_T - c), b ~ 1/2
    assert abs(slope / (alpha * c * a / (a + alpha * (1 - a))) - 1) < 0.03


def test_new_anchor_recursion_limits():
    w = pt.sdft_anchor_weight(20000, 0.5, 0.1, 0.01)
    eta = np.log(w / (1 - w))
    slope = (eta[-1] - eta[-1001]) / 1000
    assert abs(slope - 0.01 * math.log(0.9)) < 1e-5  # small-b limit: alpha log(1 - lam) per step
    # Adam trails its moving target at lr = 0.01 (weight above exact tracking) and tracks to ~1% at larger lr
    exact = pt.sdft_anchor_weight(1200, 0.5, 0.1, 0.01)[-1]
    assert pt.sdft_anchor_weight(1200, 0.5, 0.1, 0.01, adam_lr=0.01)[-1] / exact - 1 > 0.02
    for lr in (0.03, 0.1):
        assert abs(pt.sdft_anchor_weight(1200, 0.5, 0.1, 0.01, adam_lr=lr)[-1] / exact - 1) < 0.015


# ----------------------------------------------------------------------------------------------- P2, P8
def test_collapse_map_is_the_separated_flow():
    from ptforget.theory import population_flow

    fl = population_flow("fkl", 14.0, 0.5, 0.5, 0.0, 0.5, 300, weight="logit", dim=1, train_means=False)
    np.testing.assert_allclose(pt.logit_collapse_law(0.5, 0.5, 300, "map"), fl["weight"], rtol=1e-6)
    ode = pt.logit_collapse_law(0.5, 0.01, 3000, "ode")
    mp = pt.logit_collapse_law(0.5, 0.01, 3000, "map")
    assert np.max(np.abs(ode / mp - 1)) < 2e-3  # small h: the map is the ODE
    t = np.arange(1, 200.0)
    assert abs(pt.fitted_exponent(t, 3 * t**-1.3, 10, 199) + 1.3) < 1e-9


def test_training_loss_hessian_is_the_fisher_at_theta_star():
    from ptforget.theory import hessian_at_optimum

    delta, b = 4.0, 0.2
    H = np.mean([pt.rkl_estimator_hessian(delta, b, math.log(b / (1 - b)), 0.0, delta, 2**16, seed=s)
                 for s in range(8)], 0)
    np.testing.assert_allclose(H, hessian_at_optimum(delta, b, "logit", 1), atol=6e-3)
    assert abs(pt.condition_number(H) / pt.condition_number(hessian_at_optimum(delta, b, "logit", 1)) - 1) < 0.02


def test_anchor_with_the_old_mode_converges_to_the_anchor_weight():
    """With a = p* the anchored recursion's fixed point is the anchor's weight, reached from either side, and its
    first step is the exact-tracking jump to (1 - lam) b0 + lam w_a."""
    for b0 in (0.2, 0.8):
        w = pt.sdft_anchor_weight(40000, b0, 0.1, 0.01, anchor_weight=0.5)
        assert abs(w[-1] - 0.5) < 1e-6 and abs(w[1] - (0.9 * b0 + 0.05)) < 1e-3
        assert np.all(np.diff(w[1:]) * np.sign(0.5 - b0) >= -1e-12)  # monotone toward the anchor
