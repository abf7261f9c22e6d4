"""``ptforget-report <sweep> theory=true``: a real generator x objective x Delta sweep with two seeds gets the
theory's prediction for every group's exact config, in the metrics the runs measured, and figures that draw it."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptforget import plots, report
from ptforget.predict import predict_config
from tests.conftest import compose_cfg
from tests.report.conftest import is_png

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gmm, mdn x fkl, rkl x Delta 3, 5, seeds=2, plain SGD (the theory's dynamics), 1-D: 8 jobs, 16 runs."""
    root = tmp_path_factory.mktemp("theory_sweep") / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="disabled", PTFORGET_OUTPUT_DIR=str(root.parent / "outputs"))
    cmd = [str(BIN / "ptforget-train"), "-m", "generator=gmm,mdn", "objective=fkl,rkl", "task.delta=3,5",
           "task.dim=1", "seeds=2", "optimizer=sgd", "optimizer.lr=0.05", "trainer.max_steps=120", "eval_every=20",
           "quiet=true", f"hydra.sweep.dir={root}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def test_every_group_gets_a_prediction_and_the_figures_draw_it(real_sweep: Path, tmp_path: Path, monkeypatch) -> None:
    drawn: list[dict] = []
    original = plots.plot_facets

    def spy(panels, path, **kw):
        drawn.append({"path": Path(path), "panels": panels})
        return original(panels, path, **kw)

    monkeypatch.setattr(plots, "plot_facets", spy)
    res = report.write_report(real_sweep, tmp_path / "out", theory=True)
    groups = res["aggregate"]
    assert len(groups) == 8 and all(a["n"] == 2 for a in groups)
    with open(res["summary_csv"], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 8
    for row in table:  # a predicted column for every group, computed by exact population GD
        assert row["theory_basis"] == "gd", row
        for m in ("old_mass", "weight", "drift"):
            assert math.isfinite(float(row[f"predicted_{m}"])), (m, row)
    # the GMM trained with SGD follows the exact population flow of its own config: prediction = measurement
    for a in groups:
        if a["generator"] == "gmm":
            assert abs(a["old_mass_mean"] - a["predicted_old_mass"]) < 0.02, a
            assert abs(a["weight_mean"] - a["predicted_weight"]) < 0.02, a
            assert abs(a["drift_mean"] - a["predicted_drift"]) < 0.02 + 0.1 * a["predicted_drift"], a
    # the prediction follows the objective: SFT loses the old mass, reverse KL keeps p*'s
    by_key = {(a["generator"], a["objective"], a["task.delta"]): a for a in groups}
    assert by_key[("gmm", "fkl", 5)]["predicted_old_mass"] < 0.3 < by_key[("gmm", "rkl", 5)]["predicted_old_mass"]
    # figures: one panel per generator, one line per (objective, Delta), every line with its dashed theory curve
    old_mass = next(d for d in drawn if d["path"].name == "theory_old_mass.png")
    assert set(old_mass["panels"]) == {"gmm", "mdn"}
    for lines in old_mass["panels"].values():
        assert len(lines) == 4
        for data in lines.values():
            steps, values = data["theory"]
            assert steps[0] == 0 and steps[-1] == 120 and len(values) == len(steps)
    assert is_png(old_mass["path"])
    assert "| old_mass (theory) |" in res["markdown"] or "old_mass (theory)" in res["markdown"]
    assert any(p.name == "final_old_mass_vs_task.delta.png" for p in res["figures"])


def test_the_cli_takes_theory_true(real_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert report.main([str(real_sweep), "theory=true", f"out={out}", "figures=false"]) == 0
    assert "predicted_old_mass" in (out / "summary.csv").read_text().splitlines()[0]
    assert report.main([str(real_sweep), "theory=maybe"]) == 2


def test_adam_runs_are_flagged_not_predicted_as_gradient_descent() -> None:
    cfg = compose_cfg("objective=fkl", "optimizer=adam", "task.dim=1", "task.delta=4")
    from omegaconf import OmegaConf

    pred = predict_config(OmegaConf.to_container(cfg, resolve=True))
    assert pred.basis == "optimum" and "adam" in pred.reason
    assert pred.final["weight"] == 0.0 and math.isnan(pred.final["drift"]) and not pred.curves
    sgd = predict_config(OmegaConf.to_container(compose_cfg("objective=fkl", "optimizer=sgd", "optimizer.lr=0.05",
                                                            "task.dim=1", "task.delta=4"), resolve=True))
    assert sgd.basis == "gd" and 0.0 < sgd.final["weight"] < 0.5


def test_the_prediction_starts_at_the_runs_own_start_and_reads_the_region_view_exactly() -> None:
    """At step 0 the predicted mixture is q0: its old-region mass equals the quadrature of q0's density over the
    old region (an independent computation), for a reverse-KL run at Delta = 2 where the modes overlap."""
    import torch

    from ptforget.tasks import TwoModeTask

    cfg = compose_cfg("objective=rkl", "optimizer=sgd", "optimizer.lr=0.05", "task.dim=1", "task.delta=2",
                      "task.beta0=0.3", "trainer.max_steps=40", "eval_every=10")
    from omegaconf import OmegaConf

    pred = predict_config(OmegaConf.to_container(cfg, resolve=True))
    task = TwoModeTask(dim=1, delta=2.0, beta_star=0.5, beta0=0.3)
    x = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    q0 = 0.3 * torch.distributions.Normal(float(task.mu_old[0]), 1.0).log_prob(x).exp() + 0.7 * \
        torch.distributions.Normal(float(task.mu_new_init[0]), 1.0).log_prob(x).exp()
    old = task.old_region(x.float().unsqueeze(-1)).double()
    mass = float((q0 * old).sum() * (x[1] - x[0]))
    assert pred.steps[:2] == [0, 10] and pred.steps[-1] == 40
    assert abs(pred.curves["old_mass"][0] - mass) < 1e-4
    assert pred.curves["drift"][0] == 0.0
