"""The check's verdict logic, a small in-process check run and the experiment configs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from ptforget.check import interval, judge, run_check
from ptforget.errors import ConfigError
from tests.conftest import compose_cfg


def test_interval_is_a_t_interval():
    m, lo, hi = interval([1.0, 2.0, 3.0])
    assert m == 2.0
    assert hi - m == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert interval([5.0]) == (5.0, 5.0, 5.0)


@pytest.mark.parametrize(
    ("values", "ok", "verdict"),
    [
        ([0.50, 0.51, 0.49], (0.45, 0.55), "holds"),
        ([0.70, 0.71, 0.69], (0.45, 0.55), "fails"),
        ([0.40, 0.55, 0.60], (0.45, 0.55), "inconclusive"),
        ([0.01], (-math.inf, 0.05), "holds"),
        ([float("nan")], (0.0, 1.0), "inconclusive"),
    ],
)
def test_judge(values, ok, verdict):
    assert judge(values, *ok)[0] == verdict


def _check_cfg(tmp_path, *overrides):
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        cfg = compose("check", overrides=["profile.seeds=2", "profile.exact_batch=4096", *overrides])

        def train_compose(o):
            return compose("train", overrides=list(o))

        return cfg, train_compose


def test_small_check_writes_report_and_reuses_runs(tmp_path):
    cfg, train_compose = _check_cfg(tmp_path, "claims=[P3,P9,P17]")
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        payload = run_check(cfg, tmp_path, train_compose)
        assert payload["counts"]["holds"] + payload["counts"]["fails"] + payload["counts"]["inconclusive"] == len(
            payload["verdicts"])
        claims = {v["claim"] for v in payload["verdicts"]}
        assert claims == {"P3", "P9", "P17"}
        p3 = [v for v in payload["verdicts"] if v["claim"] == "P3"]
        assert all(v["verdict"] == "holds" for v in p3)  # an exact formula against autograd
        report = (tmp_path / "report.md").read_text()
        assert report.index("| claim |") < report.index("## P3")  # verdict table first
        saved = json.loads((tmp_path / "verdicts.json").read_text())
        assert len(saved["verdicts"]) == len(payload["verdicts"])
        trained = payload["runs_trained"]
        assert trained > 0
        again = run_check(cfg, tmp_path, train_compose)  # a re-launch reuses every finished run
        assert again["runs_trained"] == 0 and again["runs_reused"] == trained


def test_unknown_claim_is_refused(tmp_path):
    cfg, train_compose = _check_cfg(tmp_path, "claims=[P99]")
    with pytest.raises(ConfigError, match="claims"):
        run_check(cfg, tmp_path, train_compose)


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


def test_chen2025_overlap_accuracy_and_check_section(tmp_path):
    from scipy.integrate import quad
    from scipy.stats import norm

    from ptforget.chen import DEFAULTS, overlap_accuracy, simulate

    t, init = DEFAULTS["target"], DEFAULTS["init"]
    grid = np.linspace(-8, 8, 500)
    acc_old, acc_new = overlap_accuracy(init, t, grid)
    # independent quadrature of int min(a p, w q) / a, and methods.md's recorded initial accuracies
    ref_old = quad(lambda x: min(0.75 * norm.pdf(x, -3, 1), 0.75 * norm.pdf(x, -3.5, 1)), -8, 8, limit=200)[0] / 0.75
    ref_new = quad(lambda x: min(0.25 * norm.pdf(x, 3.5, 0.7), 0.25 * norm.pdf(x, 0.5, 0.7)), -8, 8,
                   limit=200)[0] / 0.25
    assert acc_old == pytest.approx(ref_old, abs=1e-4) and acc_new == pytest.approx(ref_new, abs=1e-4)
    assert acc_old == pytest.approx(0.803, abs=1e-3) and acc_new == pytest.approx(0.032, abs=1e-3)
    sft = simulate("fkl", 0.15)
    assert sft["reached"] and sft["at_stop"]["gain"] >= 0.9
    assert sft["trajectory"][0]["gain"] == 0 and sft["trajectory"][0]["drop"] == 0
    cfg, train_compose = _check_cfg(tmp_path, "claims=[chen2025]")
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        payload = run_check(cfg, tmp_path, train_compose)
    assert (tmp_path / "chen2025.json").exists() and "stop iteration" in (tmp_path / "report.md").read_text()
    assert [v["claim"] for v in payload["verdicts"]] == ["chen2025"]
