"""Hand-computed values and exact identities: entropic LOO advantages, adaptive beta, V*, IS weight bound, syncs."""

from __future__ import annotations

import math

import pytest
import torch

from ptforget.generators.mixture import GaussianMixture
from ptforget.objectives import OAPL, SDFT, ReverseKLReplay, TTTDiscover
from ptforget.objectives.oapl import v_star
from ptforget.objectives.replay import replay_slots
from ptforget.objectives.sdft import icl_condition, mixture_parts, mixture_sample
from ptforget.objectives.ttt_discover import PUCTArchive, adaptive_beta, entropic_advantages, kl_to_uniform
from ptforget.tasks import TwoModeTask

LN2 = math.log(2)


def _setup(obj, task=None, **gen_kw):
    task = task or TwoModeTask()
    gen = GaussianMixture(task, **gen_kw)
    obj.validate(gen, task)
    obj.setup(gen, task)
    return gen, task


# ---------------------------------------------------------------- TTT-Discover
def test_loo_entropic_advantage_hand_values():
    r = torch.tensor([[0.0, 1.0, 2.0]])
    adv = entropic_advantages(r, torch.tensor([1.0]))
    # e = (e^-2, e^-1, 1); A_i = e_i / (mean of the other two) - 1
    expected = torch.tensor([[-0.8021239603971055, -0.35194572633611465, 2.9744464996580797]])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_loo_advantage_is_shift_invariant_and_zero_for_constant_groups():
    r = torch.tensor([[0.3, 0.9, 0.1, 0.5], [2.0, 2.0, 2.0, 2.0]])
    beta = torch.tensor([2.0, 2.0])
    a = entropic_advantages(r, beta)
    torch.testing.assert_close(a, entropic_advantages(r + 100.0, beta))
    assert torch.all(a[1] == 0)
    # large beta: the max-shift keeps everything finite
    big = entropic_advantages(r[:1], torch.tensor([1e6]))
    assert torch.isfinite(big).all()


def _solve_t_for_single_winner(K: int, target: float) -> float:
    """Hand bisection on t = q_top for r = (0, ..., 0, 1): KL = t log(K t) + (1 - t) log(K (1 - t) / (K - 1))."""
    lo, hi = 1.0 / K, 1.0 - 1e-15
    for _ in range(200):
        t = 0.5 * (lo + hi)
        kl = t * math.log(K * t) + (1 - t) * math.log(K * (1 - t) / (K - 1))
        lo, hi = (t, hi) if kl < target else (lo, t)
    return 0.5 * (lo + hi)


def test_adaptive_beta_closed_form_single_winner():
    K = 4
    t = _solve_t_for_single_winner(K, LN2)
    beta_exact = math.log((K - 1) * t / (1 - t))  # softmax(beta r)_top = e^beta / (K - 1 + e^beta)
    beta = adaptive_beta(torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    assert beta.item() == pytest.approx(beta_exact, rel=1e-9)


def test_adaptive_beta_hits_ln2_on_random_groups():
    torch.manual_seed(0)
    r = torch.cat([torch.rand(6, 64), torch.randn(2, 64) * 30.0, torch.rand(2, 64) * 1e-3])
    beta = adaptive_beta(r)
    kl = kl_to_uniform(beta, r.double())
    assert torch.all((kl - LN2).abs() < 1e-6), kl
    # KL is increasing in beta, so the found beta is the root
    assert torch.all(kl_to_uniform(beta * 0.99, r.double()) < LN2)


def test_adaptive_beta_saturates_and_handles_constant_groups():
    # three tied winners out of 4: sup KL = ln(4/3) < ln 2, so beta goes to the cap (1e6);
    # constant groups get beta 0 (and A = 0)
    beta = adaptive_beta(torch.tensor([[0.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]]))
    assert beta[0].item() == pytest.approx(1e6)
    assert beta[1].item() == 0.0


def test_ttt_kl_penalty_enters_the_advantage():
    obj = TTTDiscover(groups=2, group_size=8, lam=0.5)
    gen, task = _setup(obj)
    with torch.no_grad():
        gen.mu_rest.add_(1.0)  # q != q0, so d varies
    torch.manual_seed(1)
    x = gen.sample(16)
    d = gen.log_prob(x) - obj.q0.log_prob(x)
    r = task.reward(x, "new_bump").reshape(2, 8)
    adv, _ = obj.advantages(r)
    expected = adv.reshape(-1) + 0.5 * (d.mean() - d)
    # reproduce the loss's sampling and compare the surrogate gradient
    torch.manual_seed(1)
    loss, _ = obj.loss(gen, 0)
    ref = -(expected.detach() * gen.log_prob(x)).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_puct_archive_scores_select_and_insert():
    arc = PUCTArchive(capacity=6, dim=1, device=torch.device("cpu"), c=1.0)
    arc.seed(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([0.1, 0.5, 0.3]))
    s = arc.scores()
    # ranks (0 best): 2, 0, 1 -> P = (1, 3, 2) / 6; scale = 0.4; T = 0; n = 0
    expected = torch.tensor([0.1 + 0.4 / 6, 0.5 + 0.4 * 3 / 6, 0.3 + 0.4 * 2 / 6])
    torch.testing.assert_close(s[:3], expected)
    assert torch.isinf(s[3:]).all()
    assert arc.select(1).tolist() == [1]
    children = torch.tensor([[[1.1], [0.9], [1.2]]])
    arc.update(torch.tensor([1]), children, torch.tensor([[0.9, 0.2, 0.7]]))
    assert arc.visits[1].item() == 1 and arc.total.item() == 1
    assert arc.q[1].item() == pytest.approx(0.9)
    assert arc.valid.sum().item() == 5 and arc.best().item() == pytest.approx(0.9)
    assert sorted(arc.reward[arc.valid & ~arc.seed_mask].tolist()) == pytest.approx([0.7, 0.9])


# ---------------------------------------------------------------- OAPL
def test_v_star_hand_values():
    r = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    torch.testing.assert_close(v_star(r, 1.0), torch.tensor([0.6201145069582775, math.log((1 + math.e**2) / 2)]))
    torch.testing.assert_close(v_star(r, 2.0)[1], torch.tensor(2 * 0.6201145069582775))  # 2 log((1 + e) / 2)
    # beta1 -> 0: V* -> max r; beta1 -> inf: V* -> mean r
    torch.testing.assert_close(v_star(r, 1e-3), torch.tensor([1.0, 2.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(v_star(r, 1e4), r.mean(-1), atol=1e-3, rtol=0)


def test_oapl_loss_hand_computed_and_zero_at_the_tilted_optimum():
    obj = OAPL(groups=2, group_size=4, beta1=0.5, lag=None)
    gen, task = _setup(obj)
    torch.manual_seed(3)
    loss, logs = obj.loss(gen, 0)
    torch.manual_seed(3)
    x = obj.q_lag.sample(8)
    r = task.reward(x, "new_bump").reshape(2, 4)
    v = 0.5 * (torch.logsumexp(r / 0.5, -1) - math.log(4))
    ratio = gen.log_prob(x) - obj.q_lag.log_prob(x)
    ref = ((0.5 * ratio - (r - v[:, None]).reshape(-1)) ** 2).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    # at theta = lag the residual is -(r - V*): the loss equals mean (r - V*)^2
    assert loss.item() == pytest.approx(((r - v[:, None]) ** 2).mean().item(), rel=1e-5)
    assert OAPL(beta1=0.3).beta2 == 0.3  # beta2 = beta1 by default


def test_oapl_lag_sync_counts_and_copies():
    obj = OAPL(groups=2, group_size=4, lag=3)
    gen, _ = _setup(obj)
    for step in range(1, 11):
        with torch.no_grad():
            gen.mu_rest.add_(0.1)
        obj.on_step_end(gen, step)
        if step % 3 == 0:
            torch.testing.assert_close(obj.q_lag.mu_rest, gen.mu_rest)
        else:
            assert not torch.allclose(obj.q_lag.mu_rest, gen.mu_rest)
    assert obj.n_syncs == 3 and obj._syncs.item() == 3
    fixed = OAPL(groups=2, group_size=4, lag=math.inf)
    gen2, _ = _setup(fixed)
    mu0 = fixed.q_lag.mu_rest.clone()
    for step in range(1, 11):
        with torch.no_grad():
            gen2.mu_rest.add_(0.1)
        fixed.on_step_end(gen2, step)
    assert fixed.lag is None and fixed.n_syncs == 0
    torch.testing.assert_close(fixed.q_lag.mu_rest, mu0)


# ---------------------------------------------------------------- SDFT
def test_sdft_ema_sync_count_and_closed_form():
    alpha, n = 0.1, 7
    obj = SDFT(batch=16, alpha_ema=alpha)
    gen, task = _setup(obj)
    phi0 = obj.ema.mu_rest.clone()
    with torch.no_grad():
        gen.mu_rest.add_(2.0)
    for step in range(1, n + 1):
        obj.on_step_end(gen, step)
    keep = (1 - alpha) ** n
    torch.testing.assert_close(obj.ema.mu_rest, keep * phi0 + (1 - keep) * gen.mu_rest)
    assert obj.n_syncs == n and obj._syncs.item() == n
    assert not obj.ema.mu_rest.requires_grad


def test_sdft_anchor_teacher_density_is_the_logsumexp_mixture():
    obj = SDFT(batch=16, lam=0.3, anchor="new")
    gen, task = _setup(obj)
    log_t, sample_t, w_t = obj.teacher_dist()
    x = torch.randn(50, 2) * 3
    ref = torch.log(0.7 * obj.ema.log_prob(x).exp() + 0.3 * task.p_new.log_prob(x).exp())
    torch.testing.assert_close(log_t(x), ref, atol=1e-5, rtol=1e-5)
    assert w_t.item() == pytest.approx(0.7 * task.beta_star)
    assert sample_t(1000).shape == (1000, 2)


def test_icl_conditioning_updates_only_the_new_component():
    task = TwoModeTask()
    gen = GaussianMixture(task)
    log_w, mu, L = mixture_parts(gen)
    demos = torch.stack([task.mu_new + 0.1, task.mu_new - 0.3, task.mu_new + 0.5])
    post = icl_condition(log_w, mu, L, demos, kappa=2.0)
    torch.testing.assert_close(post[0], mu[0])
    torch.testing.assert_close(post[1], (2.0 * mu[1] + demos.sum(0)) / 5.0)
    obj = SDFT(batch=16, teacher="icl", demos=4, kappa=3.0)
    gen, task = _setup(obj, task)
    _, sample_t, w_t = obj.teacher_dist()
    assert w_t.item() == pytest.approx(task.beta_star)  # weight copied from the EMA


def test_icl_teacher_of_batched_members_conditions_each_member_on_its_own_demos():
    """Batched members: the conditioned means equal a per-member loop, and the teacher's draws follow each
    member's own conditioned mixture (mean of many draws = that member's mixture mean)."""
    torch.manual_seed(0)
    log_w = torch.log_softmax(torch.randn(3, 2), -1)
    mu = torch.randn(3, 2, 2)
    L = torch.eye(2).expand(3, 2, 2, 2) * torch.tensor([0.5, 1.5]).view(1, 2, 1, 1)
    demos = torch.randn(3, 5, 2) + 2.0
    post = icl_condition(log_w, mu, L, demos, kappa=2.0)
    for b in range(3):
        torch.testing.assert_close(post[b], icl_condition(log_w[b], mu[b], L[b], demos[b], kappa=2.0))
    x = mixture_sample(log_w, post, L, 40000)
    assert x.shape == (3, 40000, 2)
    want = (log_w.exp().unsqueeze(-1) * post).sum(-2)
    torch.testing.assert_close(x.mean(-2), want, atol=0.05, rtol=0)
    obj = SDFT(batch=16, teacher="icl", demos=4, kappa=3.0)
    task = TwoModeTask()
    gen = GaussianMixture(task).stack(4)
    obj.setup(gen, task)
    _, sample_t, w_t = obj.teacher_dist()
    assert obj._pool.shape == (4, 256, 2) and obj._demos().shape == (4, 4, 2)
    assert sample_t(8).shape == (4, 8, 2) and w_t.shape == (4,)


# ---------------------------------------------------------------- replay
@pytest.mark.parametrize("lam,mode", [(0.3, "mixture"), (0.6, "mixture"), (0.3, "fixed_slots"), (0.3, "q0")])
def test_is_weight_bound(lam, mode):
    source = "q0" if mode == "q0" else "p_old"
    mode = "mixture" if mode == "q0" else mode
    obj = ReverseKLReplay(batch=64, lam=lam, source=source, mode=mode)
    task = TwoModeTask(beta_star=0.2, beta0=0.05)
    gen, _ = _setup(obj, task)
    with torch.no_grad():
        gen.mu_old.add_(0.7)  # the model is not the source: weights genuinely vary
    lam_eff = replay_slots(lam, 64) / 64 if mode == "fixed_slots" else lam
    bound = 1 / (1 - lam_eff)
    seen = []
    for _ in range(300):
        _, logs = obj.loss(gen, 0)
        seen.append(logs["is_weight_max"])
    seen = torch.stack(seen)
    assert seen.max().item() <= bound * (1 + 1e-5)
    assert seen.max().item() > 1.0  # the bound is approached, not trivially met
    assert logs["max_is_weight"].item() == pytest.approx(seen.max().item())


def test_fixed_slots_never_starve_and_counters_run_on_device():
    obj = ReverseKLReplay(batch=8, lam=0.2, mode="fixed_slots")
    gen, _ = _setup(obj, TwoModeTask(beta_star=0.05))
    for _ in range(50):
        _, logs = obj.loss(gen, 0)
    assert logs["starved_frac"].item() == 0.0
    assert obj._n_batches.item() == 50 and logs["starved_frac"].device == gen.device
    on = ReverseKLReplay(batch=8, lam=0.0)
    gen, task = _setup(on, TwoModeTask(beta_star=0.05))
    torch.manual_seed(0)
    for _ in range(400):
        _, logs = on.loss(gen, 0)
    # on-policy starvation P(N_o = 0) = (1 - m)^B with m the q-mass of the old region (R10)
    p = (1 - gen.region_view(task, 0)["region_mass"].item()) ** 8
    assert abs(logs["starved_frac"].item() - p) < 4 * math.sqrt(p * (1 - p) / 400)


def test_replay_buffer_is_drawn_once():
    obj = ReverseKLReplay(batch=16, lam=0.5, buffer=5)
    gen, _ = _setup(obj)
    buf = obj._buf.clone()
    for _ in range(5):
        obj.loss(gen, 0)
        x = obj._source_sample(100)
        assert all(any(torch.equal(row, b) for b in buf) for row in x)
    torch.testing.assert_close(obj._buf, buf)
