"""The experiment configs run, and Chen et al.'s simulation with its check section."""

from pathlib import Path

import numpy as np
import pytest

from ptforget.check import run_check
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
    payload = run_check(check_config("claims=[chen2025]", "executor=inline"), tmp_path, train_compose)
    assert (tmp_path / "chen2025.json").exists() and "stop iteration" in (tmp_path / "report.md").read_text()
    assert [v["claim"] for v in payload["verdicts"]] == ["chen2025"]
