"""The registered claims' theory predictions (ptforget-theory) and the closed forms of R10-R13 vs direct
simulations of two-atom dynamics."""

import json
import math

import numpy as np
import pytest
from scipy import special

from ptforget.check import REGISTRY, ordered, predictions
from ptforget.check.claims.forward_kl import p3_fkl_weight_gradient
from ptforget.theory import (
    TheoryConfig,
    format_predictions,
    oapl_weight,
    predictions_to_json,
    sdft_anchored_weight,
    sdft_weight_after_refreshes,
    starvation_probability,
    ttt_fixed_point,
    ttt_lower_bound,
)


@pytest.fixture(scope="module")
def default_predictions():
    return predictions(TheoryConfig())


def test_every_claim_runs_and_is_finite(default_predictions):
    preds = default_predictions
    assert [p.claim for p in preds] == [f"P{i}" for i in range(1, 18)]
    assert [p.title for p in preds] == [REGISTRY[p.claim].title for p in preds]  # one title per claim
    assert {c.id for c in ordered()} >= {p.claim for p in preds}
    for p in preds:
        assert p.quantities, p.claim
        for name, value, unit, note in p.quantities:
            assert isinstance(name, str) and isinstance(unit, str) and isinstance(note, str)
            assert math.isfinite(value), (p.claim, name, value)
    js = predictions_to_json(preds)
    assert json.loads(json.dumps(js))["P15"]["quantities"][0]["name"] == "stationary_weight"
    text = format_predictions(preds)
    assert all(f"P{i} " in text for i in range(1, 18))


def test_default_predictions_obey_their_laws(default_predictions):
    preds = {p.claim: p for p in default_predictions}
    assert preds["P1"].value("flow_final_weight") < 0.05
    assert preds["P3"].value("exact_gradient_direct") == pytest.approx(preds["P3"].value("formula_gradient_direct"),
                                                                       rel=1e-8)
    assert preds["P5"].value("flow_final_weight") == pytest.approx(0.1, abs=1e-3)
    assert preds["P6"].value("flow_final_weight") == pytest.approx(0.5, abs=1e-6)
    assert preds["P7"].value("flow_empirical_factor") == pytest.approx(preds["P7"].value("predicted_factor"),
                                                                       abs=1e-4)
    assert preds["P8"].value("max_abs_hessian_minus_fisher") < 1e-8
    assert -1.4 <= preds["P10"].value("fitted_slope") <= -0.6
    for d in (4, 5, 6, 7, 8):
        assert preds["P10"].value(f"drift[Delta={d}]") <= preds["P10"].value(f"r7_bound[Delta={d}]")
    assert preds["P11"].value("quasi_static_ratio[beta*=0.05]") > preds["P11"].value(
        "quasi_static_ratio[beta*=0.2]") > 1.0
    assert preds["P12"].value("sup_is_weight_at_theta0") <= preds["P12"].value("is_weight_bound") + 1e-12
    assert preds["P17"].value("bc_quadrature") == pytest.approx(preds["P17"].value("bc_closed_form"), rel=1e-10)


@pytest.mark.parametrize("delta", [1.0, 2.0, 4.0, 6.0])
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_p3_gradient_formula_and_bounds(delta, beta):
    p = p3_fkl_weight_gradient(TheoryConfig(delta=delta, beta_star=beta, dim=1))
    g = p.value("exact_gradient_direct")
    assert g == pytest.approx(p.value("formula_gradient_direct"), rel=1e-8)
    assert p.value("lower_bound") - 1e-12 <= g <= p.value("upper_bound") + 1e-12


def test_config_from_mapping():
    cfg = TheoryConfig.from_mapping({"delta": 5.0, "delta_grid": [5, 6], "lr_mult": {"weight": 0.005}})
    assert cfg.delta == 5.0 and cfg.delta_grid == (5.0, 6.0) and cfg.beta0 == cfg.beta_star
    with pytest.raises(ValueError, match="unknown"):
        TheoryConfig.from_mapping({"delta": 5.0, "epochs": 3})
    assert TheoryConfig.from_mapping({"epochs": 3}, ignore_unknown=True).delta == 4.0
    with pytest.raises(ValueError, match="replay"):
        TheoryConfig(replay=1.2)
    with pytest.raises(ValueError, match="weight"):
        TheoryConfig(weight="tanh")


@pytest.mark.parametrize("beta,batch,lam", [(0.2, 4, 0.3), (0.05, 16, 0.1)])
def test_starvation_monte_carlo(beta, batch, lam):
    rng = np.random.default_rng(5)
    n = 200_000
    on = (rng.random((n, batch)) < beta).sum(1)
    from_rep = rng.random((n, batch)) < lam
    mix = (from_rep | (rng.random((n, batch)) < beta)).sum(1)
    slots = math.ceil(lam * batch)
    fixed = slots + (rng.random((n, batch - slots)) < beta).sum(1)
    for counts, mode in ((on, "on_policy"), (mix, "mixture"), (fixed, "fixed_slots")):
        p = starvation_probability(beta, batch, lam, mode)
        est = np.mean(counts == 0)
        se = math.sqrt(max(p * (1 - p), 1e-12) / n)
        assert abs(est - p) <= 5 * se + 1e-12, (mode, est, p)
    assert starvation_probability(beta, batch, lam, "mixture") <= (1 - lam) ** batch
    assert mix.mean() == pytest.approx(batch * (lam + (1 - lam) * beta), abs=5 * mix.std() / math.sqrt(n))


def _ttt_simulate(gamma, lam, ro, rn, beta_ref, steps=40_000, h=0.5):
    """Logit gradient ascent with the estimator E_q[(w_gamma - 1 - lam log(q/ref)) grad log q] on two atoms."""
    eta = math.log(beta_ref / (1 - beta_ref))
    m = max(ro, rn)
    a, b = math.exp(gamma * (ro - m)), math.exp(gamma * (rn - m))
    lref = np.array([math.log(beta_ref), math.log(1 - beta_ref)])
    for _ in range(steps):
        beta = special.expit(eta)
        q = np.array([beta, 1 - beta])
        z = beta * a + (1 - beta) * b
        adv = np.array([a, b]) / z - 1 - lam * (np.log(q) - lref)
        score = np.array([1 - beta, -beta])
        eta += h * float(np.sum(q * adv * score))
    return float(special.expit(eta))


def test_ttt_fixed_point_vs_two_atom_simulation_and_paper_table():
    for gamma, lam, b_tab, lb_tab in ((1, 0.5, 0.192, 0.078), (5, 0.5, 0.0994, 0.0979), (50, 0.5, 0.0982, 0.0982),
                                      (50, 2, 0.3233, 0.3233)):
        b = ttt_fixed_point(gamma, lam, 0.0, 1.0, 0.5)
        assert _ttt_simulate(gamma, lam, 0.0, 1.0, 0.5) == pytest.approx(b, abs=1e-6)
        assert b == pytest.approx(b_tab, abs=1e-3)
        lb = ttt_lower_bound(b, lam, 0.5)
        assert lb == pytest.approx(lb_tab, abs=1e-3) and lb <= b + 1e-12
    worst = ttt_fixed_point(math.inf, 0.5, 0.0, 1.0, 0.5)
    assert ttt_lower_bound(worst, 0.5, 0.5) == pytest.approx(worst, rel=1e-10)
    # old mode rewarded more: mass grows
    assert ttt_fixed_point(2.0, 0.5, 1.0, 0.0, 0.3) == pytest.approx(_ttt_simulate(2.0, 0.5, 1.0, 0.0, 0.3),
                                                                    abs=1e-6)
    # no KL anchor: beta keeps decaying toward the predicted 0
    b1, b2 = _ttt_simulate(1.0, 0.0, 0.0, 1.0, 0.5, 2000), _ttt_simulate(1.0, 0.0, 0.0, 1.0, 0.5, 20000)
    assert b2 < b1 < 0.05 and ttt_fixed_point(1.0, 0.0, 0.0, 1.0, 0.5) == 0.0


def test_oapl_formula_vs_lagged_regression_simulation():
    beta0, tau, ro, rn, K = 0.6, 2.0, 0.0, 0.7, 6
    r = np.array([ro, rn])
    eta = math.log(beta0 / (1 - beta0))
    for _ in range(K):
        bl = special.expit(eta)
        lag = np.array([bl, 1 - bl])
        v = tau * math.log(float(np.sum(lag * np.exp(r / tau))))
        h = 0.5 / (2 * tau**2 * bl * (1 - bl))
        for _ in range(300):  # GD on E_lag[(tau log(pi/lag) - (r - V))^2]
            b = special.expit(eta)
            resid = tau * (np.log([b, 1 - b]) - np.log(lag)) - (r - v)
            eta -= h * float(np.sum(lag * 2 * resid * tau * np.array([1 - b, -b])))
    assert special.expit(eta) == pytest.approx(oapl_weight(beta0, K, ro, rn, tau), rel=1e-9)
    assert oapl_weight(beta0, 50, 1.0, 0.5, tau) > beta0  # r_o >= r_n: retained (grows)


def _rkl_two_atom_fit(eta, beta_teacher, steps=400, h=2.0):
    """GD on KL(q_eta || T) over two atoms: grad_eta = beta(1-beta)(logit beta - logit beta_T)."""
    lt = math.log(beta_teacher / (1 - beta_teacher))
    for _ in range(steps):
        b = special.expit(eta)
        eta -= h * b * (1 - b) * (eta - lt)
    return eta


def test_sdft_refresh_and_anchored_ema_vs_simulation():
    beta0, kappa, K = 0.5, 0.8, 7
    eta = 0.0
    for _ in range(K):
        bt = special.expit(eta + math.log(kappa))  # demonstration-conditioned self-teacher
        eta = _rkl_two_atom_fit(eta, bt)
    assert special.expit(eta) == pytest.approx(sdft_weight_after_refreshes(beta0, kappa, K), rel=1e-8)
    # anchored teacher (1 - lam) q_copy + lam a, exact tracking per refresh
    lam, ba = 0.2, 0.3
    eta = 0.0
    for _ in range(K):
        bt = (1 - lam) * special.expit(eta) + lam * ba
        eta = _rkl_two_atom_fit(eta, bt)
    assert special.expit(eta) == pytest.approx(sdft_anchored_weight(beta0, ba, lam, K), rel=1e-8)
    # slow EMA teacher, one student step per teacher update: still converges to the anchor
    eta, b_ema, alpha = 0.0, 0.5, 0.05
    for _ in range(4000):
        bt = (1 - lam) * b_ema + lam * ba
        b = special.expit(eta)
        eta -= 1.0 * b * (1 - b) * (eta - math.log(bt / (1 - bt)))
        b_ema = (1 - alpha) * b_ema + alpha * special.expit(eta)
    assert special.expit(eta) == pytest.approx(ba, abs=1e-4)
