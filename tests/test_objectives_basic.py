"""Estimator gradients against exact gradients computed by 1-D grid quadrature, and the KL metrics."""

import math

import pytest
import torch

from ptforget.errors import ConfigError
from ptforget.generators import Flow, GaussianMixture
from ptforget.metrics import measure
from ptforget.objectives import ForwardKL, ReverseKL
from ptforget.tasks import TwoModeTask

GRID = torch.linspace(-14.0, 14.0, 40001).unsqueeze(-1)
DX = float(GRID[1] - GRID[0])


def exact_rkl(gen, task):
    log_q = gen.log_prob(GRID)
    return torch.trapezoid(log_q.exp() * (log_q - task.p_star.log_prob(GRID)), dx=DX)


def exact_fkl(gen, task):
    return torch.trapezoid(task.p_new.log_prob(GRID).exp() * -gen.log_prob(GRID), dx=DX)


def params(gen):
    return [p for p in gen.parameters() if p.requires_grad]


def compare(gen, exact_loss, estimate, reps=40, z=6.0):
    """Mean of ``reps`` estimated gradients vs the exact gradient, within z standard errors."""
    exact = torch.autograd.grad(exact_loss(), params(gen))
    samples = [torch.autograd.grad(estimate(), params(gen)) for _ in range(reps)]
    for i, ge in enumerate(exact):
        est = torch.stack([s[i] for s in samples])
        se = est.std(0) / math.sqrt(reps)
        assert torch.all((est.mean(0) - ge).abs() <= z * se + 1e-4), (i, est.mean(0), ge, se)
        assert ge.abs().max() > 1e-3  # the comparison is not vacuous


def tiny_gmm(weight="logit", covariance="diag"):
    task = TwoModeTask(dim=1, delta=3.0, beta_star=0.3, new_offset=1.5)
    gen = GaussianMixture(task, weight=weight, covariance=covariance)
    with torch.no_grad():
        gen.mu_old.add_(0.3)
    return task, gen


@pytest.mark.parametrize("estimator", ["enumerate", "score"])
@pytest.mark.parametrize("weight", ["logit", "direct"])
def test_reverse_kl_gradient_matches_exact(estimator, weight):
    torch.manual_seed(0)
    task, gen = tiny_gmm(weight)
    obj = ReverseKL(batch=4000, estimator=estimator)
    obj.setup(gen, task)
    compare(gen, lambda: exact_rkl(gen, task), lambda: obj.loss(gen, 0)[0])


def test_reverse_kl_pathwise_flow_gradient():
    """Pathwise flow gradient: equals finite differences of the same sampled objective (common random numbers),
    and agrees in expectation with the independent score-function estimator.

    (Grid quadrature is not used here: spline flows have density kinks at the spline bounds whose position
    moves with the parameters, which a fixed grid's autograd misses.)
    """
    torch.manual_seed(0)
    task = TwoModeTask(dim=1, delta=3.0, beta_star=0.3)
    flow = Flow(task, transforms=2, hidden=[8], pretrain={"steps": 50}, cache_dir=None)
    ps = params(flow)
    obj = ReverseKL(batch=2000, estimator="pathwise")
    obj.setup(flow, task)
    torch.manual_seed(7)
    grads = torch.autograd.grad(obj.loss(flow, 0)[0], ps)
    with torch.no_grad():
        for i in range(len(ps)):
            j = int(grads[i].abs().argmax())
            p0, eps = ps[i].view(-1)[j].item(), 1e-3
            vals = []
            for sgn in (1, -1):
                ps[i].view(-1)[j] = p0 + sgn * eps
                torch.manual_seed(7)
                vals.append(obj.loss(flow, 0)[0].item())
            ps[i].view(-1)[j] = p0
            fd = (vals[0] - vals[1]) / (2 * eps)
            assert fd == pytest.approx(grads[i].view(-1)[j].item(), rel=0.02, abs=2e-3)
    score = ReverseKL(batch=4000, estimator="score")
    score.setup(flow, task)
    reps = 30
    pw = [torch.autograd.grad(obj.loss(flow, 0)[0], ps) for _ in range(reps)]
    sf = [torch.autograd.grad(score.loss(flow, 0)[0], ps) for _ in range(reps)]
    for i in range(len(ps)):
        a, b = torch.stack([g[i] for g in pw]), torch.stack([g[i] for g in sf])
        se = torch.sqrt(a.var(0) / reps + b.var(0) / reps)
        assert torch.all((a.mean(0) - b.mean(0)).abs() <= 6 * se + 1e-4), i


def test_reverse_kl_value_estimates_kl():
    torch.manual_seed(0)
    task, gen = tiny_gmm()
    for est in ("enumerate", "score"):
        obj = ReverseKL(batch=20000, estimator=est)
        obj.setup(gen, task)
        _, logs = obj.loss(gen, 0)
        assert logs["kl"].item() == pytest.approx(exact_rkl(gen, task).item(), abs=0.02)


def test_forward_kl_gradient_matches_exact():
    torch.manual_seed(0)
    task, gen = tiny_gmm()
    obj = ForwardKL(batch=4000)
    obj.setup(gen, task)
    compare(gen, lambda: exact_fkl(gen, task), lambda: obj.loss(gen, 0)[0])


def test_estimator_family_errors():
    task = TwoModeTask(dim=2)
    gen = GaussianMixture(task)
    with pytest.raises(ConfigError, match="objective.estimator"):
        ReverseKL(estimator="pathwise").validate(gen, task)
    flow = Flow(task, transforms=1, hidden=[4], pretrain={"steps": 0})
    with pytest.raises(ConfigError, match="objective.estimator"):
        ReverseKL(estimator="enumerate").validate(flow, task)
    with pytest.raises(ConfigError, match="objective.batch"):
        ReverseKL(batch=0)
    with pytest.raises(ConfigError, match="objective.target"):
        ForwardKL(target="both")


@pytest.mark.parametrize("shift", [0.5, 1.5])
def test_kl_metrics_match_closed_form_gaussian_kl(shift):
    """With Delta = 0 the target is one Gaussian; a GMM with both means at m is N(m, Sigma)."""
    cov = [[1.0, 0.3], [0.3, 0.6]]
    task = TwoModeTask(dim=2, delta=0.0, covariance=cov)
    gen = GaussianMixture(task)
    m = torch.tensor([shift, -0.5 * shift])
    with torch.no_grad():
        gen.mu_old.copy_(m)
        gen.mu_rest.copy_(m.unsqueeze(0))
    S = torch.tensor(cov)
    closed = 0.5 * float(m @ torch.linalg.solve(S, m))  # KL both ways for equal covariances
    torch.manual_seed(0)
    n = 50_000
    got = measure(gen, task, n)
    for key in ("kl_q_pstar", "kl_pstar_q"):
        # per-sample log-ratio has variance m' S^-1 m = 2 * closed
        se = math.sqrt(2 * closed / n)
        assert got[key].item() == pytest.approx(closed, abs=5 * se)
