"""Start fidelity (ptforget.fidelity): the quadrature KL and old mass against independent Monte-Carlo estimates,
the 2-D Monte-Carlo path against the equivalent 1-D quadrature, and the quick profile's flow within its gates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from ptforget.fidelity import q0_old_mass, start_fidelity
from ptforget.generators.base import Generator
from ptforget.tasks import TwoModeTask
from tests.conftest import compose_cfg


class Mixture(Generator):
    """Two Gaussians with the task's covariance, old weight ``w`` and means shifted along the modes' axis by ``shift``
    (Mahalanobis units): a start that misses q0 by a known amount, built from torch.distributions alone."""

    def __init__(self, task: TwoModeTask, w: float, shift: tuple[float, float]) -> None:
        super().__init__()
        axis = (task.mu_new - task.mu_old) / task.delta
        loc = torch.stack([task.mu_old + shift[0] * axis, task.mu_new_init + shift[1] * axis])
        comp = MultivariateNormal(loc, scale_tril=task.scale_tril.expand(2, task.dim, task.dim))
        self.dist = MixtureSameFamily(Categorical(probs=torch.tensor([w, 1 - w])), comp)

    def log_prob(self, x):
        return self.dist.log_prob(x)

    def sample(self, n):
        return self.dist.sample((n,))


def test_quadrature_matches_monte_carlo_in_1d():
    """KL(q0 || start) and the start's old mass by quadrature agree with plain Monte Carlo (4 standard errors)."""
    task = TwoModeTask(dim=1, delta=4.0, beta_star=0.2, new_offset=1.0)
    start = Mixture(task, 0.3, (0.2, -0.3))
    fid = start_fidelity(start, task)
    assert float(fid["kl_se"]) == 0 and float(fid["kl"]) > 0.02
    torch.manual_seed(0)
    n = 400_000
    y = task.sample("q0", n)
    d = (task.log_prob("q0", y) - start.log_prob(y)).double()
    assert abs(float(fid["kl"]) - float(d.mean())) < 4 * float(d.std()) / math.sqrt(n)
    m = task.old_region(start.sample(n)).double().mean()
    assert abs(float(fid["old_mass"]) - float(m)) < 4 * math.sqrt(float(m * (1 - m)) / n)
    assert float(fid["total_mass"]) == pytest.approx(1.0, abs=1e-6)
    assert float(fid["old_mass_rel_err"]) == pytest.approx(abs(float(fid["old_mass"]) - q0_old_mass(task))
                                                           / q0_old_mass(task))


def test_q0_scores_zero():
    """q0 itself: KL 0 and its own old mass (the exact value from the half-space formula)."""
    task = TwoModeTask(dim=1, delta=6.0, beta_star=0.05, new_offset=1.0)
    fid = start_fidelity(Mixture(task, 0.05, (0.0, 0.0)), task)
    assert abs(float(fid["kl"])) < 1e-6 and float(fid["old_mass_rel_err"]) < 1e-5


def test_2d_monte_carlo_matches_the_1d_quadrature():
    """With a full covariance the log-ratio of two mixtures on the modes' axis depends on the whitened axis
    coordinate alone, so the 2-D KL and old mass equal those of the 1-D task: the Monte-Carlo estimates (with their
    standard errors) must cover the 1-D quadrature values."""
    common = {"delta": 4.0, "beta_star": 0.2, "new_offset": 1.0}
    t1 = TwoModeTask(dim=1, **common)
    t2 = TwoModeTask(dim=2, covariance=[[1.0, 0.6], [0.6, 0.5]], **common)
    f1 = start_fidelity(Mixture(t1, 0.3, (0.2, -0.3)), t1)
    f2 = start_fidelity(Mixture(t2, 0.3, (0.2, -0.3)), t2, n=200_000)
    assert float(f2["kl_se"]) > 0
    assert abs(float(f2["kl"]) - float(f1["kl"])) < 4 * float(f2["kl_se"])
    assert abs(float(f2["old_mass"]) - float(f1["old_mass"])) < 4 * float(f2["old_mass_se"])
    assert float(f2["q0_old_mass"]) == pytest.approx(float(f1["q0_old_mass"]), rel=1e-5)
    assert abs(float(f2["total_mass"]) - 1) < 4 * float(f2["total_mass_se"])
    torch.manual_seed(1)  # the old mass by plain sampling of the start (independent of q0's draws)
    m = t2.old_region(Mixture(t2, 0.3, (0.2, -0.3)).sample(400_000)).double().mean()
    assert abs(float(f2["old_mass"]) - float(m)) < 4 * math.sqrt(float(m * (1 - m)) / 400_000)


def test_quick_profile_flow_starts_at_q0():
    """The quick profile's flow, pretrained for one of the check's 1-D configs, is within the start gates: KL(q0 ||
    start) <= 0.01 nats and old mass within 1% of q0's."""
    from ptforget.build import build

    profile = OmegaConf.load(Path(__file__).parents[1] / "conf" / "profile" / "quick.yaml")
    cfg = compose_cfg("generator=flow", *profile.families.flow.overrides, "objective=rkl", "task.dim=1",
                      "task.delta=6", "task.beta_star=0.2", "task.new_offset=1", "generator.cache_dir=null")
    task, flow, _ = build(cfg)
    fid = start_fidelity(flow, task)
    assert float(fid["kl"]) <= 0.01
    assert float(fid["old_mass_rel_err"]) <= 0.01


def test_mdn_auto_pretraining_starts_at_q0_and_falls_back_in_2d():
    """objective=auto fits the MDN by quadrature in 1-D (its start is q0 to float precision, where sampled MLE
    leaves the old mass off by up to ~1%), and by samples in d = 2 (no quadrature grid there)."""
    from ptforget.generators.mdn import MixtureDensityNetwork

    task = TwoModeTask(dim=1, delta=6.0, beta_star=0.05, new_offset=1.0)
    fid = start_fidelity(MixtureDensityNetwork(task, pretrain={"steps": 100, "objective": "auto"}, cache_dir=None),
                         task)
    assert float(fid["kl"]) < 1e-4 and float(fid["old_mass_rel_err"]) < 1e-3
    t2 = TwoModeTask(dim=2, delta=4.0)
    MixtureDensityNetwork(t2, pretrain={"steps": 5, "objective": "auto"}, cache_dir=None)
    with pytest.raises(Exception, match="generator.pretrain.objective"):
        MixtureDensityNetwork(t2, pretrain={"steps": 5, "objective": "quadrature"}, cache_dir=None)
