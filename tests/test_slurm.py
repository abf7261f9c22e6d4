"""The cluster path against a real SLURM (``scripts/slurm_local.sh up``; CI starts it and runs ``pytest -m slurm``).

Without a SLURM these tests skip with the reason; under ``CI=true`` a SLURM that is not up fails them instead. They
check what a researcher's cluster does to jobs: the launcher's CPU defaults fit a node, a request beyond the
partition is refused in one line, and a job preempted in any of SLURM's ways (``scancel --signal=TERM``,
``scancel --signal=USR2``, ``scontrol requeue``) ends in the uninterrupted run's results and the check's verdicts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm,
              pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/\w+' is validated against ConfigStore schema")]

TRAIN = Path(sys.executable).parent / "ptforget-train"
CHECK = Path(sys.executable).parent / "ptforget-check"
#: a GMM run long enough to be preempted mid-run (a checkpoint every 20 steps shows that it is training)
LONG = ["generator=gmm", "trainer.max_steps=600", "eval_every=50", "checkpoint_every=20", "logger=none",
        "quiet=true"]


def _slurm_reason() -> str | None:
    """Why no SLURM can run jobs here (None: a node answers idle or busy, and accounting answers)."""
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return "no SLURM commands (sudo scripts/slurm_local.sh up starts a one-node SLURM)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout.split()
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"SLURM does not answer ({err})"
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"no SLURM node is up (sinfo: {' '.join(states) or 'nothing'}; sudo scripts/slurm_local.sh up)"
    if acct.returncode != 0:
        return f"SLURM accounting does not answer (sacct: {acct.stderr.strip()}): submitit needs it"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = _slurm_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PTFORGET_OUTPUT_DIR": str(tmp_path / "outputs"), "PTFORGET_CACHE_DIR":
            str(tmp_path / "cache"), "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def _sacct(job: str) -> list[tuple[str, str, str]]:
    """(job id, state, exit code) of a job's allocation rows (array tasks and requeued runs included)."""
    out = subprocess.run(["sacct", "-n", "-P", "-D", "-X", "-j", job, "-o", "JobID,State,ExitCode"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def _mid_run(folder: Path, deadline: float) -> list[str]:
    """Wait until a run under ``folder`` has written its first checkpoint (it is training); the running jobs."""
    while time.time() < deadline:
        if list(folder.rglob("last.ckpt")):
            out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True, timeout=20)
            return out.stdout.split()
        time.sleep(0.1)
    raise AssertionError(f"no run in {folder} reached its first checkpoint in time")


def _array_ids(sweep: Path) -> set[str]:
    """The SLURM job ids of a sweep, from submitit's folders ``<sweep>/.submitit/<job>_<task>``."""
    folder = sweep / ".submitit"
    return {d.name.split("_")[0] for d in folder.iterdir() if d.name.split("_")[0].isdigit()} if folder.is_dir() \
        else set()


def _release_requeued(proc: subprocess.Popen) -> None:
    """While ``proc`` runs, let requeued jobs start at once: SLURM holds a requeued job for about two minutes
    (reason BeginTime), a scheduling delay that changes nothing about how the job resumes."""
    while proc.poll() is None:
        out = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], capture_output=True, text=True, timeout=20)
        for line in out.stdout.splitlines():
            job, reason = line.split(maxsplit=1)
            if reason.strip() == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True,
                               timeout=20, check=False)
        time.sleep(1)


def _reference(tmp_path: Path, seed: int) -> dict:
    """The uninterrupted run's summary, trained in this process."""
    from ptforget.train import run_training
    from tests.conftest import compose_cfg

    return run_training(compose_cfg(*LONG, f"seed={seed}"), tmp_path / f"ref{seed}")


def test_launcher_cpu_defaults_run_a_sweep_on_the_node(slurm, tmp_path: Path) -> None:
    """The shipped submitit_slurm defaults (no GPU, one CPU, the node's memory) run the README's sweep."""
    sweep = tmp_path / "sweep"
    p = subprocess.run([str(TRAIN), "-m", "hydra/launcher=submitit_slurm", "seed=1,2", "trainer.max_steps=50",
                        "logger=none", f"hydra.sweep.dir={sweep}"], env=_env(tmp_path), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for k, seed in enumerate((1, 2)):
        s = json.loads((sweep / str(k) / "summary.json").read_text())
        assert (s["status"], s["seed"], s["steps"]) == ("complete", seed, 50)
    jobs = _array_ids(sweep)
    assert len(jobs) == 1  # one array job
    rows = _sacct(jobs.pop())
    assert len(rows) == 2 and all(state == "COMPLETED" and code == "0:0" for _, state, code in rows), rows


def test_a_request_beyond_the_partition_fails_in_one_line(slurm, tmp_path: Path) -> None:
    p = subprocess.run([str(TRAIN), "-m", "hydra/launcher=submitit_slurm", "seed=1", "trainer.max_steps=5",
                        "hydra.launcher.cpus_per_task=4096", "logger=none", f"hydra.sweep.dir={tmp_path / 's'}"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    ours = [ln for ln in p.stderr.splitlines() if ln.startswith("ptforget: error: SLURM: sbatch")]
    assert len(ours) == 1 and "hydra.launcher.cpus_per_task" in ours[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr


def test_a_launcher_stopped_by_sigterm_cancels_its_jobs(slurm, tmp_path: Path) -> None:
    """A launching command killed by a timeout (SIGTERM) exits 143 and leaves none of its jobs queued or running."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([str(TRAIN), "-m", "hydra/launcher=submitit_slurm", "seed=1,2", *LONG,
                             f"hydra.sweep.dir={sweep}"], env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not _array_ids(sweep):
        assert time.time() < deadline and proc.poll() is None, "the sweep was never submitted"
        time.sleep(0.2)
    (array,) = _array_ids(sweep)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    deadline = time.time() + 60
    while subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True, timeout=20).stdout.strip():
        assert time.time() < deadline, "the sweep's jobs are still queued or running"
        time.sleep(0.5)
    assert {state.split()[0] for _, state, _ in _sacct(array)} == {"CANCELLED"}


def test_usr2_and_requeue_resume_a_sweep_to_the_uninterrupted_results(slurm, tmp_path: Path) -> None:
    """Job 0 gets submitit's preemption signal (USR2: it checkpoints at its step, then submitit requeues it), job
    1 is requeued by SLURM (SIGTERM: it checkpoints and exits 143); both resume and end bit-identical to runs that
    were never interrupted."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([str(TRAIN), "-m", "hydra/launcher=submitit_slurm", "seed=1,2", *LONG,
                             f"hydra.sweep.dir={sweep}"], env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        _mid_run(sweep / "0", deadline)
        _mid_run(sweep / "1", deadline)
        (array,) = _array_ids(sweep)
        subprocess.run(["scancel", "--signal=USR2", f"{array}_0"], check=True, timeout=30)
        subprocess.run(["scontrol", "requeue", f"{array}_1"], check=True, timeout=30)
        threading.Thread(target=_release_requeued, args=(proc,), daemon=True).start()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 0, err[-3000:]
    for k, seed in enumerate((1, 2)):
        got = json.loads((sweep / str(k) / "summary.json").read_text())
        assert got["status"] == "complete" and got["resumed_from_step"] > 0, got.get("resumed_from_step")
        ref = _reference(tmp_path, seed)
        assert got["final"] == ref["final"] and got["config_hash"] == ref["config_hash"]
        assert (sweep / str(k) / "trajectory.csv").read_text() == (tmp_path / f"ref{seed}" / "trajectory.csv"
                                                                   ).read_text()


def test_the_check_preempted_with_term_gives_the_inline_verdicts(slurm, tmp_path: Path) -> None:
    """A check job cancelled with SIGTERM mid-run exits 143 with its checkpoint saved; the check resumes it and only
    then judges: the verdicts and values are inline's, and no error is left in the report."""
    common = ["claims=[P1]", "generators=[gmm]", "profile.families.gmm.seeds=3", "profile.families.gmm.steps=600",
              "train_overrides=['checkpoint_every=20']", "quiet=true"]
    res = {}
    p = subprocess.run([str(CHECK), *common, "executor=inline", f"hydra.run.dir={tmp_path / 'inline'}"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res["inline"] = json.loads((tmp_path / "inline" / "verdicts.json").read_text())
    out = tmp_path / "slurm"
    killed: list[str] = []

    def preempt() -> None:
        try:
            jobs = _mid_run(out / "runs", time.time() + 300)
        except AssertionError:
            return
        for job in jobs:  # the one training job (gmm has no pretraining job)
            subprocess.run(["scancel", "--signal=TERM", job], timeout=30, check=False)
            killed.append(job)

    watcher = threading.Thread(target=preempt, daemon=True)
    watcher.start()
    p = subprocess.run([str(CHECK), *common, "executor=submitit_slurm", "executor.poll_s=0.5",
                        f"hydra.run.dir={out}"], env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    watcher.join(timeout=10)
    assert p.returncode == 0, p.stderr[-3000:]
    assert killed, "the watcher never saw a job mid-run"
    # the job exited 143 (128 + SIGTERM), which sacct 22.05 shows as "15:0" (measured: a step that runs
    # sys.exit(143) reads the same) and srun's log states plainly; before, RunInterrupted escaped and it exited 1
    assert {(state, code) for _, state, code in _sacct(killed[0])} == {("FAILED", "15:0")}
    logs = "".join(f.read_text() for f in (out / "submitit").glob(f"{killed[0]}_*log.err"))
    assert "Exited with exit code 143" in logs, logs[-2000:]
    res["slurm"] = json.loads((out / "verdicts.json").read_text())
    assert res["slurm"]["errors"] == []
    rows = {k: [(v["claim"], v["family"], v["values"], v["verdict"]) for v in r["verdicts"]] for k, r in res.items()}
    assert rows["slurm"] == rows["inline"] and rows["inline"]
    resumed = [json.loads(s.read_text())["resumed_from_step"] for s in out.rglob("summary.json")]
    assert any(r and r > 0 for r in resumed), resumed  # the preempted run was resumed, not retrained
