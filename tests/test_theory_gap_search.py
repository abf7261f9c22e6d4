"""The theory-gap search: conf/hparams_search/theory_gap.yaml drives Hydra's Optuna sweeper over the run's own
config, each trial reports |measured - predicted| final old mass, and the sweeper maximises it; debug=fast is a
few-step smoke test of a config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import compose_cfg

BIN = Path(sys.executable).parent


def test_the_search_maximises_the_reported_gap(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'ptforget[search]'")
    sweep = tmp_path / "gap"
    env = {**os.environ, "WANDB_MODE": "disabled", "PTFORGET_OUTPUT_DIR": str(tmp_path / "out")}
    cmd = [str(BIN / "ptforget-train"), "hparams_search=theory_gap", "objective=fkl", "hydra.sweeper.n_trials=3",
           "hydra.sweeper.sampler.n_startup_trials=3", "generator=gmm",
           "trainer.max_steps=100", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gaps = []
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        gap = json.loads((job / "theory_gap.json").read_text())
        summary = json.loads((job / "summary.json").read_text())
        assert summary["config"]["optimizer"]["name"] == "sgd" and summary["config"]["task"]["dim"] == 1
        assert gap["measured_old_mass"] == pytest.approx(summary["final"]["old_mass"])
        assert gap["theory_gap"] == pytest.approx(abs(gap["measured_old_mass"] - gap["predicted_old_mass"]))
        assert gap["theory_basis"] == "gd" and gap["theory_gap"] < 0.05  # the GMM follows its own exact flow
        gaps.append(gap["theory_gap"])
    assert len(gaps) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(gaps))


def test_debug_fast_is_a_short_run_without_cache_or_checkpoints(tmp_path: Path) -> None:
    from ptforget.train import run_training

    cfg = compose_cfg("debug=fast")
    assert cfg.trainer.max_steps == 20 and cfg.checkpoint_every == 0 and cfg.paths.cache_dir is None
    assert cfg.study == "debug"
    summary = run_training(cfg, tmp_path)
    assert summary["status"] == "complete" and summary["steps"] == 20


def test_a_sweep_says_job_k_of_n_with_an_eta_and_no_srun_warning(tmp_path: Path) -> None:
    """On a host with ``srun`` (a stand-in on PATH) Lightning's suggestion to use it is not printed; every job line
    of a sweep says which job of how many it was, and the ETA of the rest."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    env = {**os.environ, "WANDB_MODE": "disabled", "PTFORGET_OUTPUT_DIR": str(tmp_path / "out"),
           "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "ptforget-train"), "-m", "seed=0,1", "trainer.max_steps=20", "eval_every=10",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = [ln for ln in proc.stdout.splitlines() if ln.startswith("[job ")]
    assert len(jobs) == 2 and "; job 1/2, ETA " in jobs[0] and jobs[1].endswith("; job 2/2")
    assert "srun" not in proc.stderr and "srun" not in proc.stdout
