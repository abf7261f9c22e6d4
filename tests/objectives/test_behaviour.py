"""Seeded GMM runs through run_training that land on the theory's fixed points (paper R9-R13).

The default run keeps these short; the longer ones are marked ``slow``.
"""

from __future__ import annotations

import csv
import itertools

import pytest

from ptforget.train import run_training
from tests.conftest import compose_cfg


def _run(tmp_path, *overrides):
    cfg = compose_cfg("generator=gmm", *overrides)
    summary = run_training(cfg, tmp_path)
    assert summary["status"] == "complete"
    with open(tmp_path / "trajectory.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    return summary, {int(r["step"]): r for r in rows}


@pytest.mark.parametrize("lam", [0.1, 0.3])
def test_fkl_replay_old_weight_converges_to_lambda(tmp_path, lam):
    s, _ = _run(tmp_path, "objective=fkl_replay", f"objective.lam={lam}", "objective.batch=128",
                "trainer.max_steps=1000", "eval_every=100")
    assert abs(s["final"]["weight"] - lam) < 0.03  # R9: beta -> lam whatever beta0 and Delta
    assert s["final"]["comp_drift"] < 0.1


def test_rkl_replay_keeps_beta_star_and_starves_less(tmp_path):
    common = ("objective=rkl_replay", "objective.batch=8", "task.beta_star=0.05", "trainer.max_steps=1000",
              "eval_every=100")
    out = {}
    for name, extra in {"on": ("objective.lam=0.0",), "mix": ("objective.lam=0.5",),
                        "slots": ("objective.lam=0.5", "objective.mode=fixed_slots")}.items():
        s, rows = _run(tmp_path / name, *common, *extra)
        out[name] = (s["final"]["weight"], rows[1000]["obj_starved_frac"], rows[1000]["obj_max_is_weight"])
    for w, _, _ in out.values():
        assert abs(w - 0.05) < 0.01  # R10: the population optimum is unchanged
    assert out["on"][1] > 0.4  # on-policy: (1 - m)^8 batches without an old-mode sample
    assert out["mix"][1] < 0.05 and out["slots"][1] == 0.0
    assert out["on"][2] == 1.0 and out["mix"][2] <= 2.0 + 1e-4 and out["slots"][2] <= 2.0 + 1e-4


def test_oapl_loses_weight_at_each_sync_and_keeps_it_with_a_fixed_reference(tmp_path):
    common = ("objective=oapl", "objective.reward=new_bump", "trainer.max_steps=500", "eval_every=25")
    _, lagged = _run(tmp_path / "lag", *common, "objective.lag=100")
    ends = [lagged[s]["weight"] for s in (100, 200, 300, 400, 500)]
    assert all(a - b > 0.03 for a, b in itertools.pairwise(ends))  # a step down per sync (R13)
    for s in (200, 300, 400, 500):  # flat within a phase once it has converged to q_lag e^{r/beta} / Z
        assert abs(lagged[s]["weight"] - lagged[s - 25]["weight"]) < 0.015
    # logs come from the last step's loss, computed before that step's sync: syncs at 100..400 -> 4
    assert lagged[500]["obj_lag_syncs"] == 4
    _, fixed = _run(tmp_path / "fixed", *common, "objective.lag=inf")
    assert fixed[500]["obj_lag_syncs"] == 0
    assert abs(fixed[500]["weight"] - fixed[100]["weight"]) < 0.02 and fixed[500]["weight"] > 0.35


@pytest.mark.slow
def test_ttt_discover_keeps_old_mass_only_with_the_kl_penalty(tmp_path):
    common = ("objective=ttt_discover", "objective.reward=new_bump", "trainer.max_steps=800", "eval_every=100")
    s0, _ = _run(tmp_path / "l0", *common, "objective.lam=0.0")
    s1, rows = _run(tmp_path / "l1", *common, "objective.lam=1.0")
    assert s0["final"]["old_mass"] < 0.06  # R12, lam = 0: mass (and the old component) go to the new mode
    assert s1["final"]["old_mass"] > 0.2  # lam > 0: bounded shift (R12 fixed point ~0.22 for the weight)
    assert abs(rows[800]["weight"] - rows[500]["weight"]) < 0.02  # plateau


def test_ttt_discover_lambda_effect_short(tmp_path):
    common = ("objective=ttt_discover", "objective.groups=2", "objective.reward=new_bump", "trainer.max_steps=300",
              "eval_every=100")
    s0, _ = _run(tmp_path / "l0", *common, "objective.lam=0.0")
    s1, _ = _run(tmp_path / "l1", *common, "objective.lam=1.0")
    assert s1["final"]["old_mass"] > 0.2 > s0["final"]["old_mass"]


@pytest.mark.slow
def test_sdft_anchor_star_keeps_beta_star_and_anchor_new_forgets_slowly(tmp_path):
    common = ("objective=sdft", "objective.lam=0.1", "objective.alpha_ema=0.01", "trainer.max_steps=1500",
              "eval_every=250")
    s_star, _ = _run(tmp_path / "star", *common, "objective.anchor=star")
    assert abs(s_star["final"]["weight"] - 0.5) < 0.03
    _, rows = _run(tmp_path / "new", *common, "objective.anchor=new")
    w = [rows[s]["weight"] for s in range(0, 1501, 250)]
    assert all(a > b for a, b in itertools.pairwise(w))  # monotone
    assert w[1] > 0.3 and w[-1] < 0.2  # slow: ~ exp(-lam * alpha_ema * t)


def test_sdft_anchor_short(tmp_path):
    common = ("objective=sdft", "objective.lam=0.1", "objective.alpha_ema=0.05", "objective.batch=128",
              "trainer.max_steps=400", "eval_every=100")
    s_star, _ = _run(tmp_path / "star", *common, "objective.anchor=star")
    s_new, rows = _run(tmp_path / "new", *common, "objective.anchor=new")
    assert abs(s_star["final"]["weight"] - 0.5) < 0.03
    assert s_new["final"]["weight"] < 0.25 and rows[400]["obj_ema_syncs"] == 399  # synced after every step
