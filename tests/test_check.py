"""The check's verdict logic, a small in-process check run and the experiment configs."""

import json
import math
from pathlib import Path

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


EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "ptforget/conf/experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_configs_compose_and_run(experiment, tmp_path):
    from ptforget.train import run_training

    cfg = compose_cfg(f"experiment={experiment}", "trainer.max_steps=3", "eval_every=1", "objective.batch=16")
    summary = run_training(cfg, tmp_path)
    assert summary["status"] == "complete" and summary["steps"] == 3
