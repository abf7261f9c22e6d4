"""Estimator gradients against exact gradients from 1-D quadrature (tolerances from the Monte-Carlo standard error)."""

from __future__ import annotations

import pytest
import torch

from ptforget.generators.mixture import GaussianMixture
from ptforget.objectives import SDFT, ReverseKL, ReverseKLReplay
from ptforget.tasks import TwoModeTask

GRID = torch.linspace(-25.0, 25.0, 20001).unsqueeze(-1)


def _student(obj, task):
    """A 1-D GMM, set up with the objective, then moved away from its frozen copies (teacher / q0 / p*)."""
    gen = GaussianMixture(task)
    obj.validate(gen, task)
    obj.setup(gen, task)
    with torch.no_grad():
        gen.weight_param.add_(0.4)
        gen.mu_old.add_(0.3)
        gen.mu_rest.sub_(0.5)
    return gen


def _params(gen):
    return [gen.weight_param, gen.mu_old, gen.mu_rest]


def _flat_grad(gen, value):
    grads = torch.autograd.grad(value, _params(gen))
    return torch.cat([g.reshape(-1) for g in grads])


def _exact_kl_grad(gen, log_target):
    """grad of KL(q || T) = int q (log q - log T) dx by the trapezoid rule on a wide grid."""
    log_q = gen.log_prob(GRID)
    kl = torch.trapezoid(log_q.exp() * (log_q - log_target(GRID)), GRID[:, 0])
    return _flat_grad(gen, kl)


def _mc(gen, obj, reps):
    gs = torch.stack([_flat_grad(gen, obj.loss(gen, 0)[0]) for _ in range(reps)])
    return gs.mean(0), gs.std(0) / reps**0.5


def _assert_unbiased(mean, se, exact, k=4.5, floor=1e-4):
    err = (mean - exact).abs()
    assert torch.all(err <= k * se + floor), f"mean {mean} exact {exact} se {se}"


@pytest.mark.parametrize("estimator,reps,batch", [("enumerate", 100, 512), ("score", 300, 256)])
def test_sdft_reverse_gradient_matches_quadrature(estimator, reps, batch):
    torch.manual_seed(0)
    task = TwoModeTask(dim=1, delta=4.0)
    obj = SDFT(batch=batch, lam=0.3, anchor="star", estimator=estimator)
    gen = _student(obj, task)
    log_t, _, _ = obj.teacher_dist()
    exact = _exact_kl_grad(gen, log_t)
    mean, se = _mc(gen, obj, reps)
    _assert_unbiased(mean, se, exact)
    if estimator == "enumerate":
        # power check: cutting the autograd path through x into the teacher (the no_grad pitfall) is detected
        wrong = torch.stack([
            _flat_grad(gen, gen.expectation(lambda x: gen.log_prob(x) - log_t(x.detach()), batch))
            for _ in range(reps)]).mean(0)
        assert (wrong - exact).abs().max() > 10 * se.max() + 1e-3


def test_sdft_icl_teacher_keeps_the_x_path():
    torch.manual_seed(0)
    task = TwoModeTask(dim=1, delta=4.0)
    obj = SDFT(batch=512, teacher="icl", estimator="enumerate", demo_pool=None, demos=4)
    gen = _student(obj, task)
    torch.manual_seed(5)
    log_t, _, _ = obj.teacher_dist()
    exact = _exact_kl_grad(gen, log_t)
    obj.teacher_dist = lambda: (log_t, None, None)  # freeze this step's demonstrations
    mean, se = _mc(gen, obj, 100)
    _assert_unbiased(mean, se, exact)


@pytest.mark.parametrize("mode,source", [("mixture", "p_old"), ("fixed_slots", "p_old"), ("mixture", "q0")])
def test_rkl_replay_expected_gradient_is_the_on_policy_gradient(mode, source):
    torch.manual_seed(0)
    task = TwoModeTask(dim=1, delta=4.0, beta_star=0.3)
    obj = ReverseKLReplay(batch=32, lam=0.5, mode=mode, source=source)
    gen = _student(obj, task)
    exact = _exact_kl_grad(gen, task.p_star.log_prob)
    mean, se = _mc(gen, obj, 1500)
    _assert_unbiased(mean, se, exact)


def test_rkl_replay_with_lam_zero_is_on_policy_reverse_kl():
    task = TwoModeTask(dim=1, delta=4.0)
    rep, ref = ReverseKLReplay(batch=64, lam=0.0), ReverseKL(batch=64, estimator="score")
    gen = _student(rep, task)
    ref.validate(gen, task)
    ref.setup(gen, task)
    for seed in range(3):
        torch.manual_seed(seed)
        a = _flat_grad(gen, rep.loss(gen, 0)[0])
        torch.manual_seed(seed)
        b = _flat_grad(gen, ref.loss(gen, 0)[0])
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
