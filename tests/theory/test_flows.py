"""Exact population GD flows: retention, collapse laws, replay optimum, drift scaling, local rate."""

import math

import numpy as np
import pytest

from ptforget.theory import (
    PopulationSpec,
    contraction_factor,
    population_flow,
    population_gradient,
)


@pytest.mark.parametrize("delta,beta", [(3.0, 0.5), (6.0, 0.5), (4.0, 0.2)])
def test_rkl_retains_mass_and_converges(delta, beta):
    r = population_flow("rkl", delta, beta, None, 1.0, 0.2, 400)
    assert abs(r["weight"][-1] - beta) < 1e-3
    assert r["loss"][-1] < 1e-10 and r["loss"][0] > 1e-3
    assert r["new_mean_error"][-1] < 1e-4 and r["old_mean_error"][-1] < 1e-4


def test_fkl_logit_collapse_follows_one_over_t():
    b0, h = 0.5, 0.5
    r = population_flow("fkl", 6.0, 0.5, b0, 1.0, h, 3000, train_means=False)
    assert np.all(np.diff(r["weight"]) < 0)
    for s in (300, 1000, 3000):
        assert r["weight"][s] * (1 + b0 * h * s) / b0 == pytest.approx(1.0, rel=0.1)
    t = np.arange(300, 3001)
    slope = np.polyfit(np.log(t), np.log(r["weight"][300:]), 1)[0]
    assert -1.1 < slope < -0.9
    # paper.md R3 table (means trained, Delta=6, h=0.5): 0.0206, 0.00207, 7.0e-4
    rt = population_flow("fkl", 6.0, 0.5, b0, 1.0, h, 3000)
    for s, v in ((100, 0.0206), (1000, 0.00207), (3000, 7.0e-4)):
        assert rt["weight"][s] == pytest.approx(v, rel=0.03)


def test_fkl_direct_weight_linear_collapse_hits_clip():
    b0, h = 0.5, 0.01
    r = population_flow("fkl", 6.0, 0.5, b0, 1.0, h, 200, weight="direct")
    pred = (b0 - b0**2 / 2) / h
    hit = int(np.nonzero(r["weight"] <= 1e-3 + 1e-15)[0][0])
    assert abs(hit - pred) <= 0.2 * pred
    assert r["weight"][10] == pytest.approx(0.328, abs=0.01)  # paper.md R3 check
    assert r["weight"][-1] == 1e-3


def test_fkl_old_mean_migrates_or_creeps_paper_r4():
    r = population_flow("fkl", 6.0, 0.5, None, 1.0, 0.5, 20000, record_every=1000)
    assert r["weight"][-1] == pytest.approx(1.1e-4, rel=0.1)
    assert r["old_mean"][-1] == pytest.approx(0.70, abs=0.03)
    assert r["old_mean"][3] == pytest.approx(0.32, abs=0.02)
    r2 = population_flow("fkl", 2.0, 0.5, None, 1.0, 0.5, 20000, record_every=20000)
    assert abs(r2["old_mean"][-1] - 2.0) < 0.1 and r2["weight"][-1] > 0.1  # migrated, mass stalls


@pytest.mark.parametrize("lam", [0.1, 0.3])
@pytest.mark.parametrize("delta", [3.0, 6.0])
def test_fkl_replay_optimum_is_lambda(lam, delta):
    r = population_flow("fkl", delta, 0.5, None, 1.0, 0.5, 3000, replay=lam, record_every=100)
    assert abs(r["weight"][-1] - lam) < 1e-3
    assert r["old_mean_error"][-1] < 1e-3 and r["new_mean_error"][-1] < 1e-3
    assert r["loss"][-1] < 1e-8


def test_rkl_drift_decays_like_bc():
    xs, ys = [], []
    for d in (5.0, 6.0, 7.0, 8.0):
        r = population_flow("rkl", d, 0.5, None, 1.0, 0.2, 400)
        xs.append(r["separation"].min() ** 2 / 8)
        ys.append(math.log(r["old_mean_error"].max()))
    slope = np.polyfit(xs, ys, 1)[0]
    assert -1.4 <= slope <= -0.6
    # paper.md R7 table (beta*=0.5, mu_n(0)=Delta-1, h=0.2, 400 steps)
    for d, v in ((4.0, 0.0744), (6.0, 0.0115), (8.0, 6.1e-4)):
        drift = population_flow("rkl", d, 0.5, None, 1.0, 0.2, 400)["old_mean_error"].max()
        assert drift == pytest.approx(v, rel=0.03)


@pytest.mark.parametrize("weight,lr", [("logit", 0.2), ("direct", 0.05)])
def test_rkl_linear_rate_matches_hessian(weight, lr):
    delta, beta = 4.0, 0.3
    c = contraction_factor(delta, beta, lr, weight)
    r = population_flow("rkl", delta, beta, None, 1.0, lr, 6000, weight=weight)
    w = r["weight"]
    wp = np.log(w / (1 - w)) - math.log(beta / (1 - beta)) if weight == "logit" else w - beta
    err = np.sqrt(wp**2 + r["old_mean_error"] ** 2 + r["new_mean_error"] ** 2)
    i1, i2 = np.nonzero(err < 1e-5)[0][0], np.nonzero(err < 1e-9)[0][0]
    emp = (err[i2] / err[i1]) ** (1 / (i2 - i1))
    assert emp == pytest.approx(c["spectral_radius"], abs=2e-4)


def test_flow_step_is_gd_with_multipliers_and_sigma_units():
    delta, lr, mult = 3.0, 0.1, {"weight": 0.5, "old": 0.005, "new": 2.0}
    for objective, weight in (("fkl", "logit"), ("rkl", "direct")):
        r = population_flow(objective, delta, 0.4, 0.45, 1.5, lr, 1, weight=weight, replay=0.2, lr_mult=mult)
        w0 = math.log(0.45 / 0.55) if weight == "logit" else 0.45
        spec = PopulationSpec(delta, 0.4, 1, weight, replay=0.2 if objective == "fkl" else 0.0, beta0=0.45,
                              new_offset=1.5)
        g = population_gradient(objective, {"weight": w0, "old": [0.0], "new": [1.5]}, spec)
        w1 = w0 - lr * mult["weight"] * float(g["weight"])
        b1 = 1 / (1 + math.exp(-w1)) if weight == "logit" else w1
        assert r["weight"][1] == pytest.approx(b1, rel=1e-10)
        assert r["old_mean"][1] == pytest.approx(-lr * mult["old"] * g["old"][0], rel=1e-8, abs=1e-15)
        assert r["new_mean"][1] == pytest.approx(1.5 - lr * mult["new"] * g["new"][0], rel=1e-10)
        assert r["loss"][0] == pytest.approx(float(g["loss"]), rel=1e-10)
    # GD in data units with Sigma = sigma^2 I: lr * sigma^2 reproduces the whitened trajectory
    a = population_flow("rkl", delta, 0.4, None, 1.0, 0.1, 50)
    b = population_flow("rkl", delta, 0.4, None, 1.0, 0.1 * 4.0, 50, sigma=2.0, lr_mult={"weight": 0.25})
    assert np.allclose(a["weight"], b["weight"], rtol=1e-12)
    assert np.allclose(2.0 * a["old_mean_error"], b["old_mean_error"], rtol=1e-10, atol=1e-15)


def test_flow_outputs_frozen_means_and_recording():
    r = population_flow("fkl", 4.0, 0.5, None, 2.0, 0.05, 105, train_means=False, record_every=10, dim=3)
    assert list(r["step"]) == [*range(0, 101, 10), 105]
    for k in ("weight", "old_mean_error", "new_mean_error", "loss", "old_mean", "new_mean"):
        assert r[k].shape == r["step"].shape and np.all(np.isfinite(r[k]))
    assert np.all(r["old_mean"] == 0.0) and np.all(r["new_mean"] == 2.0)
    assert r["weight"][0] == 0.5 and r["new_mean_error"][0] == pytest.approx(2.0)


def test_flow_rejects_bad_input():
    base = {"delta": 3.0, "beta_star": 0.5, "beta0": None, "new_offset": 1.0, "lr": 0.1, "steps": 5}
    bad = [("objective", {"objective": "xent"}), ("beta_star", {"beta_star": 1.5}), ("beta0", {"beta0": 0.0}),
           ("delta", {"delta": -3.0}), ("replay", {"replay": -0.1}), ("replay", {"replay": 1.0}),
           ("weight", {"weight": "softmax"}), ("lr_mult", {"lr_mult": {"scale": 1.0}}), ("dim", {"dim": 0}),
           ("replay_source", {"replay_source": "p_new"}), ("lr", {"lr": 0.0})]
    for name, override in bad:
        kw = {"objective": "fkl", **base, **override}
        with pytest.raises(ValueError, match=name):
            population_flow(**kw)
