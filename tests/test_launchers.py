"""Hydra launchers: the shipped hydra/launcher configs compose against the plugins' schemas, and a tiny 4-run
sweep completes through joblib and through submitit's local executor (each as a real `ptforget-train -m`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

# the launcher configs share their names with the plugins' schemas on purpose (see conf/__init__.py)
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/\w+' is validated against ConfigStore schema")

TRAIN = Path(sys.executable).parent / "ptforget-train"
TINY = ["generator=gmm", "trainer.max_steps=20", "eval_every=10", "logger=none", "quiet=true"]


def _compose_hydra(launcher: str, *overrides: str):
    from hydra import compose, initialize_config_module

    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("train", overrides=[f"hydra/launcher={launcher}", *overrides], return_hydra_config=True)


@pytest.mark.parametrize(("launcher", "target"), [
    ("joblib", "hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_local", "hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ("submitit_slurm", "hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launcher_config_composes(launcher: str, target: str) -> None:
    cfg = _compose_hydra(launcher).hydra.launcher
    assert cfg._target_ == f"hydra_plugins.{target}"
    if launcher.startswith("submitit"):  # submitit's own files stay inside the sweep dir
        assert OmegaConf.to_container(cfg)["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    if launcher == "submitit_slurm":
        for key in ("partition", "timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism",
                    "max_num_timeout"):
            assert key in cfg
        assert cfg.max_num_timeout > 0 and cfg.timeout_min > 0


def test_joblib_n_jobs_defaults_to_all_cores_and_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTFORGET_N_JOBS", raising=False)
    assert _compose_hydra("joblib").hydra.launcher.n_jobs == -1
    monkeypatch.setenv("PTFORGET_N_JOBS", "3")
    assert _compose_hydra("joblib").hydra.launcher.n_jobs == 3


def test_slurm_config_renders_an_sbatch_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Map the config to submitit parameters the way the plugin's launch() does and render the sbatch script:
    submitit rejects any parameter it does not know, so this is the launch-time check without a cluster."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import _make_sbatch_string

    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "srun").write_text("#!/bin/sh\nexit 0\n")
    (stub / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")  # submitit looks for srun

    cfg = _compose_hydra("submitit_slurm_gpu", "hydra.launcher.partition=gpu", "+hydra.launcher.additional_parameters"
                         ".mail_type=END", f"hydra.sweep.dir={tmp_path / 'sweep'}", "study=probe")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    folder = params.pop("submitit_folder")
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder,
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = _make_sbatch_string(command="python -m x", folder=folder, map_count=4, **executor._executor.parameters)
    for line in ("--array=0-3%4", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4", "--mem=16GB",
                 "--time=60", "--job-name=ptforget-probe", "--mail-type=END", f"--output={tmp_path}/sweep/.submitit/"):
        assert f"#SBATCH {line}" in script, (line, script)
    assert executor._executor.max_num_timeout == 3


def test_slurm_defaults_fit_a_cpu_node_and_the_gpu_config_asks_for_a_gpu() -> None:
    """submitit_slurm asks for no GPU, one CPU and no --mem (the node's memory), so it runs on any CPU partition;
    submitit_slurm_gpu is the same launcher with one GPU, 4 CPUs and 16 GB per job."""
    cpu, gpu = (_compose_hydra(name).hydra.launcher for name in ("submitit_slurm", "submitit_slurm_gpu"))
    assert (cpu.gpus_per_node, cpu.cpus_per_task, cpu.mem_gb) == (0, 1, None)
    assert (gpu.gpus_per_node, gpu.cpus_per_task, gpu.mem_gb) == (1, 4, 16)
    assert gpu._target_ == cpu._target_ and gpu.max_num_timeout == cpu.max_num_timeout


def test_launcher_config_rejects_unknown_key() -> None:
    """The schema is the plugin's own: a misspelt key fails at composition, not after jobs are queued."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        _compose_hydra("submitit_slurm", "hydra.launcher.gpus_per_nod=2")


@pytest.mark.parametrize(("launcher", "seeds"), [
    pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], [0, 1, 2, 3], id="joblib"),
    # submitit starts one fresh interpreter per job (torch + Lightning imports, ~4 s of CPU each)
    pytest.param(["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"], [0, 1, 2, 3],
                 id="submitit_local"),
])
def test_sweep_through_launcher(launcher: list[str], seeds: list[int], tmp_path: Path) -> None:
    assert TRAIN.exists(), f"console script not installed next to {sys.executable}"
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "PTFORGET_N_JOBS"}
    env.update(WANDB_MODE="disabled", WANDB_SILENT="true", PTFORGET_OUTPUT_DIR=str(tmp_path / "outputs"),
               PTFORGET_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    cmd = [str(TRAIN), "-m", *launcher, *TINY, "seed=" + ",".join(map(str, seeds)), f"hydra.sweep.dir={sweep}"]
    # own session, so a timeout kills the launcher's workers too (submitit jobs outlive their parent otherwise)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"sweep timed out: {' '.join(cmd)}\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "validated against ConfigStore schema" not in err  # filtered in conf/__init__.py

    run_dirs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert [d.name for d in run_dirs] == [str(i) for i in range(len(seeds))]
    recorded = []
    for run_dir in run_dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "complete", (run_dir, summary.get("reason"))
        assert summary["steps"] == 20
        lines = (run_dir / "trajectory.csv").read_text().strip().splitlines()
        assert len(lines) >= 2  # header plus at least one evaluation row
        recorded.append(summary["seed"])
    assert sorted(recorded) == seeds
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("summary.json"))
