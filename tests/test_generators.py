import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal

from ptforget.errors import ConfigError
from ptforget.generators import Flow, GaussianMixture, MixtureDensityNetwork
from ptforget.tasks import TwoModeTask


def perturbed_gmm(weight: str, covariance: str, K: int = 2, dim: int = 2) -> GaussianMixture:
    task = TwoModeTask(dim=dim, delta=3.0, beta_star=0.3, covariance=[[1.0, 0.3], [0.3, 0.8]] if dim == 2 else None)
    g = GaussianMixture(task, components=K, weight=weight, covariance=covariance)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.2 * torch.randn_like(p))
    g.project_()
    return g


def reference_mixture(g: GaussianMixture) -> MixtureSameFamily:
    with torch.no_grad():
        comp = MultivariateNormal(g.means(), scale_tril=g.scale_trils())
        return MixtureSameFamily(Categorical(probs=g.weights()), comp)


@pytest.mark.parametrize("weight", ["logit", "direct"])
@pytest.mark.parametrize("covariance", ["fixed", "diag", "full"])
@pytest.mark.parametrize("K", [2, 3])
def test_gmm_log_prob_matches_torch_distributions(weight, covariance, K):
    g = perturbed_gmm(weight, covariance, K)
    x = torch.randn(200, 2) * 3
    assert torch.allclose(g.log_prob(x), reference_mixture(g).log_prob(x), atol=1e-4)
    assert torch.allclose(g.weights().sum(), torch.tensor(1.0))


def test_gmm_logit_weight_is_sigmoid_and_direct_is_clamped():
    task = TwoModeTask(dim=1, delta=4.0, beta_star=0.3)
    g = GaussianMixture(task, weight="logit")
    assert g.weights()[0].item() == pytest.approx(0.3)
    assert torch.sigmoid(g.weight_param[0]).item() == pytest.approx(0.3)
    d = GaussianMixture(task, weight="direct", weight_clip=1e-3)
    with torch.no_grad():
        d.weight_param.fill_(-0.5)
    d.project_()
    assert d.weights()[0].item() == pytest.approx(1e-3, rel=1e-3)


def test_gmm_sampling_moments():
    g = perturbed_gmm("logit", "full")
    torch.manual_seed(0)
    x = g.sample(200_000)
    ref = reference_mixture(g)
    se = ref.variance.sqrt() / math.sqrt(x.shape[0])
    assert torch.all((x.mean(0) - ref.mean).abs() < 5 * se)
    emp_cov = torch.cov(x.T)
    w, mu, L = g.weights(), g.means(), g.scale_trils()
    m = (w[:, None] * mu).sum(0)
    cov = sum(w[k] * (L[k] @ L[k].T + torch.outer(mu[k] - m, mu[k] - m)) for k in range(2))
    assert torch.allclose(emp_cov, cov.detach(), atol=0.05)


def test_gmm_region_view_exact_vs_monte_carlo():
    g = perturbed_gmm("logit", "full")
    task = TwoModeTask(dim=2, delta=3.0, beta_star=0.3, covariance=[[1.0, 0.3], [0.3, 0.8]])
    exact = g.region_view(task, 0)
    torch.manual_seed(1)
    x = g.sample(400_000)
    mask = task.old_region(x)
    assert exact["region_mass"].item() == pytest.approx(mask.float().mean().item(), abs=5e-3)
    assert torch.allclose(exact["region_mean"], x[mask].mean(0), atol=1e-2)
    assert torch.allclose(exact["new_region_mean"], x[~mask].mean(0), atol=1e-2)


def test_gmm_expectation_gradient_matches_exact_gradient():
    """Enumerated expectation of a quadratic f: its gradient matches the closed-form gradient."""
    g = perturbed_gmm("logit", "full")
    a = torch.tensor([0.7, -0.4])
    B = torch.tensor([[0.5, 0.1], [0.1, 0.3]])

    def f(x):
        return x @ a + ((x @ B) * x).sum(-1)

    def exact():
        w, mu, L = g.weights(), g.means(), g.scale_trils()
        S = L @ L.transpose(-1, -2)
        per = mu @ a + ((mu @ B) * mu).sum(-1) + torch.einsum("ij,kji->k", B, S)
        return (w * per).sum()

    grads_exact = torch.autograd.grad(exact(), list(g.parameters()))
    torch.manual_seed(0)
    reps = [torch.autograd.grad(g.expectation(f, 20_000), list(g.parameters())) for _ in range(20)]
    for i, ge in enumerate(grads_exact):
        est = torch.stack([r[i] for r in reps])
        se = est.std(0) / math.sqrt(est.shape[0]) + 1e-6
        assert torch.all((est.mean(0) - ge).abs() < 6 * se + 1e-4), (i, est.mean(0), ge)


def test_mdn_log_prob_matches_torch_distributions_and_starts_near_q0():
    task = TwoModeTask(dim=2, delta=5.0, beta_star=0.4)
    torch.manual_seed(0)
    m = MixtureDensityNetwork(task, pretrain={"steps": 100}, cache_dir=None)
    log_w, mu, s = m.params()
    ref = MixtureSameFamily(Categorical(logits=log_w), Independent(Normal(mu, s), 1))
    x = torch.randn(100, 2) * 3
    assert torch.allclose(m.log_prob(x), ref.log_prob(x), atol=1e-4)
    view = m.component_view()
    assert view["weight"].item() == pytest.approx(0.4, abs=0.05)
    assert torch.linalg.norm(view["comp_old_mean"] - task.mu_old).item() < 0.2


def test_pretrain_cache_is_reused(tmp_path):
    task = TwoModeTask(dim=2, delta=5.0)
    m1 = MixtureDensityNetwork(task, pretrain={"steps": 20}, cache_dir=str(tmp_path))
    m2 = MixtureDensityNetwork(task, pretrain={"steps": 20}, cache_dir=str(tmp_path))
    assert m1.pretrain_stats["pretrain_cached"] == 0.0 and m2.pretrain_stats["pretrain_cached"] == 1.0
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(list(tmp_path.glob("mdn-*.pt"))) == 1


@pytest.mark.parametrize("kind", ["nsf", "realnvp"])
def test_flow_invertible_and_log_det_equals_autograd_jacobian(kind):
    task = TwoModeTask(dim=2, delta=4.0)
    torch.manual_seed(0)
    flow = Flow(task, kind=kind, transforms=2, hidden=[16], pretrain={"steps": 30}, cache_dir=None)
    dist = flow.flow()
    x = torch.randn(6, 2) * 2

    def forward(v):  # data -> base space, through the fixed standardisation
        return dist.transform((v - flow.shift) / flow.scale)

    z = forward(x)
    back = flow.shift + flow.scale * dist.transform.inv(z)
    assert torch.allclose(back, x, atol=1e-4)
    base = Normal(torch.zeros(2), torch.ones(2))
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda v: forward(v.unsqueeze(0))[0], x[i])
        expected = base.log_prob(z[i]).sum() + torch.logdet(J)
        assert flow.log_prob(x[i : i + 1])[0].item() == pytest.approx(expected.item(), abs=1e-4)
    xs, lp = flow.rsample_and_log_prob(8)
    assert torch.allclose(lp, flow.log_prob(xs), atol=1e-3)


def test_flow_pretraining_fits_q0():
    task = TwoModeTask(dim=2, delta=4.0)
    torch.manual_seed(0)
    flow = Flow(task, transforms=3, hidden=[32, 32], pretrain={"steps": 400}, cache_dir=None)
    st = flow.pretrain_stats
    assert st["pretrain_nll"] - st["pretrain_q0_entropy"] < 0.1  # KL(q0 || flow) < 0.1 nats
    view = flow.readout(task, 20_000)
    exact_q0 = GaussianMixture(task).region_view(task, 0)
    assert view["region_mass"].item() == pytest.approx(exact_q0["region_mass"].item(), abs=0.05)


def test_bad_generator_values():
    task = TwoModeTask(dim=1)
    with pytest.raises(ConfigError, match="generator.kind"):
        Flow(task, kind="realnvp", pretrain={"steps": 0})
    with pytest.raises(ConfigError, match="generator.weight"):
        GaussianMixture(task, weight="softmax")
    with pytest.raises(ConfigError, match="generator.lr_mult"):
        GaussianMixture(task, lr_mult={"olde": 0.1})
    with pytest.raises(ConfigError, match="generator.components"):
        MixtureDensityNetwork(task, components=1, pretrain={"steps": 0})
