import math

import pytest
import torch

from ptforget.errors import ConfigError
from ptforget.tasks import TwoModeTask


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta_star": 1.0}, "task.beta_star"),
        ({"beta_star": 0.0}, "task.beta_star"),
        ({"beta_star": float("nan")}, "task.beta_star"),
        ({"beta0": 1.5}, "task.beta0"),
        ({"delta": -1.0}, "task.delta"),
        ({"dim": 0}, "task.dim"),
        ({"sigma": 0.0}, "task.sigma"),
        ({"dim": 2, "covariance": [[1.0, 2.0], [2.0, 1.0]]}, "task.covariance"),
        ({"dim": 2, "covariance": [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]}, "task.covariance"),
        ({"reward_kind": "nope"}, "task.reward_kind"),
        ({"dim": 1, "new_shift": 1.0}, "task.new_shift"),
    ],
)
def test_invalid_values_name_the_field(kwargs, key):
    with pytest.raises(ConfigError) as err:
        TwoModeTask(**kwargs)
    assert err.value.key == key
    assert key in str(err.value) and "allowed" in str(err.value)


def test_mahalanobis_separation_and_bc_with_full_covariance():
    cov = [[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]]
    task = TwoModeTask(dim=3, delta=3.5, covariance=cov)
    d = (task.mu_new - task.mu_old).double()
    maha = math.sqrt(float(d @ torch.linalg.solve(torch.tensor(cov, dtype=torch.float64), d)))
    assert maha == pytest.approx(3.5, rel=1e-5)
    assert task.bc == pytest.approx(math.exp(-(3.5**2) / 8))


def test_distributions_and_q0():
    task = TwoModeTask(dim=2, delta=4.0, beta_star=0.3, beta0=0.6, new_offset=1.5)
    x = torch.randn(50, 2) * 3
    ref = torch.logsumexp(torch.stack([math.log(0.3) + task.p_old.log_prob(x),
                                       math.log(0.7) + task.p_new.log_prob(x)]), 0)
    assert torch.allclose(task.p_star.log_prob(x), ref, atol=1e-5)
    q0 = task.q0
    assert torch.allclose(q0.mixture_distribution.probs, torch.tensor([0.6, 0.4]))
    assert torch.allclose(q0.component_distribution.loc[0], task.mu_old)  # old component correct
    # new component 1.5 Mahalanobis units from mu_n* toward mu_o*
    assert torch.linalg.norm(q0.component_distribution.loc[1] - task.mu_new).item() == pytest.approx(1.5, rel=1e-5)


def test_old_region_is_the_bayes_region():
    task = TwoModeTask(dim=2, delta=2.0, beta_star=0.2, covariance=[[1.0, 0.4], [0.4, 2.0]])
    x = torch.randn(4000, 2) * 3
    bayes = math.log(0.2) + task.p_old.log_prob(x) > math.log(0.8) + task.p_new.log_prob(x)
    assert torch.equal(task.old_region(x), bayes)


def test_rewards():
    task = TwoModeTask(dim=2, delta=6.0)
    assert task.reward(task.mu_new.unsqueeze(0)).item() == pytest.approx(1.0)
    assert task.reward(task.mu_old.unsqueeze(0)).item() < 1e-6
    assert task.reward(task.mu_old.unsqueeze(0), "both_bumps").item() == pytest.approx(1.0)
    x = torch.randn(5, 2)
    assert torch.allclose(task.reward(x, "log_p_star"), task.p_star.log_prob(x))
