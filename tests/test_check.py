"""The experiment configs run, and Chen et al.'s simulation with its check section."""

from pathlib import Path

import numpy as np
import pytest

from ptforget.check import run_check
from ptforget.io import read_json
from tests.check.conftest import check_config, train_compose
from tests.conftest import compose_cfg

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf/experiment").glob("*.yaml")
    if p.stem != "chen2025"  # carries parameters for its own loop; tested below
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_configs_compose_and_run(experiment, tmp_path):
    from ptforget.train import run_training

    cfg = compose_cfg(f"experiment={experiment}", "trainer.max_steps=3", "eval_every=1", "objective.batch=16")
    summary = run_training(cfg, tmp_path)
    assert summary["status"] == "complete" and summary["steps"] == 3


def test_chen2025_overlap_accuracy_simulations_and_check_section(tmp_path):
    from scipy.integrate import quad
    from scipy.stats import norm

    from ptforget.chen import SETTINGS, TARGET, overlap_accuracy, simulate

    init = SETTINGS["bimodal"]["init"]
    one = np.ones(1)
    old = (one * init["weight_old"], one * init["mu_old"], one * init["sigma_old"])
    new = (one * (1 - init["weight_old"]), one * init["mu_new"], one * init["sigma_new"])
    acc_old, acc_new = overlap_accuracy(old, new, TARGET, np.linspace(-8, 8, 500))
    # independent quadrature of int min(a p, w q) / a, and methods.md's recorded initial accuracies
    ref_old = quad(lambda x: min(0.75 * norm.pdf(x, -3, 1), 0.75 * norm.pdf(x, -3.5, 1)), -8, 8, limit=200)[0] / 0.75
    ref_new = quad(lambda x: min(0.25 * norm.pdf(x, 3.5, 0.7), 0.25 * norm.pdf(x, 0.5, 0.7)), -8, 8,
                   limit=200)[0] / 0.25
    assert acc_old[0] == pytest.approx(ref_old, abs=1e-4) and acc_new[0] == pytest.approx(ref_new, abs=1e-4)
    assert acc_old[0] == pytest.approx(0.803, abs=1e-3) and acc_new[0] == pytest.approx(0.032, abs=1e-3)
    whole = (one, one * -3.5, one)  # the uni-modal model q = N(-3.5, 1) against each weighted target component
    u_old, u_new = overlap_accuracy(whole, whole, TARGET, np.linspace(-10, 10, 500))
    assert u_old[0] == pytest.approx(0.900, abs=1e-3) and u_new[0] == pytest.approx(0.0, abs=1e-3)
    sft = simulate("bimodal", "fkl", 0.15, {"seeds": 4})
    assert sft["reached"].all() and (sft["gain_at_stop"] >= 0.9).all()
    assert (sft["gain"][0] == 0).all() and (sft["drop"][0] == 0).all()
    assert len(set(np.round(sft["drop_at_stop"], 12))) == 4  # every seed its own random stream
    payload = run_check(check_config("claims=[chen2025]", "executor=inline", "profile.chen_seeds=4"), tmp_path,
                        train_compose)
    assert (tmp_path / "chen2025.json").exists() and "seeds reaching gain 0.9" in (tmp_path / "report.md").read_text()
    rows = payload["verdicts"]
    # both variants (described, faithful): bi-modal RL vs SFT, uni-modal SFT/RL forget, RL vs SFT, the published
    # SFT and RL drops; their run itself (n=1) and the reward floor alone against the faithful run
    assert [v["claim"] for v in rows] == ["chen2025"] * 14 and all(v["kind"] == "replication" for v in rows)
    assert sorted(v["n"] for v in rows) == [1] + [4] * 13
    assert {v["family"] for v in rows} == {"chen2025"} and rows[0]["versus"] is not None
    assert {v["extra"]["faithful"] for v in rows if v["title"].startswith("Bi-modal")} == {False, True}
    entries = read_json(tmp_path / "chen2025.json")
    main = [e for e in entries if isinstance(e["faithful"], bool)]
    assert len(main) == 10 and {e["faithful"] for e in main} == {False, True}
    for e in entries:
        assert {"setting", "method", "lr", "faithful", "stop", "drop_at_stop"} <= set(e)
        assert len(e["stop"]) == len(e["drop_at_stop"]) == 4
    text = (tmp_path / "report.md").read_text()
    assert "| unimodal | reinforce lr=0.005 | reward_floor |" in text and "stop and drop |" in text
