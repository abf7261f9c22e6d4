"""Executors: where the check's training jobs run. Results always come back through the run folders.

* ``Inline``: one after another in this process (no start-up cost per job);
* ``Processes``: a pool of ``workers`` processes on this machine (default: the cores available), one torch thread
  each; the workers fork from a server process that has imported ptforget once;
* ``Submitit``: every job a submitit job (``cluster: local`` on this machine, ``slurm`` on a cluster); a
  requeued (preempted or timed-out) job resumes from its ``last.ckpt``.

Each is selected by ``executor=<name>`` (``conf/executor/``) and built from its ``_target_``. A job that fails is
reported, not fatal: the other jobs run, and the claims that needed it say so.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptforget.check.plan import Job, job_payload
from ptforget.errors import ConfigError, check, is_int
from ptforget.interrupt import RunInterrupted


@dataclass
class Outcome:
    """How one job ended: ``status`` complete/diverged (its summary), failed (``error``) or not run."""

    key: str
    status: str
    wall: float = 0.0
    error: str = ""


Report = Callable[[Job, Outcome], None]


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one job from its payload (a worker's entry point); never raises: a failure is returned."""
    from omegaconf import OmegaConf

    from ptforget.train import run_training

    t0 = time.perf_counter()
    try:
        import torch

        cfg = OmegaConf.create(payload["cfg"])
        torch.set_num_threads(int(cfg.get("threads", 1)))
        if payload.get("kind") == "pretrain":
            from ptforget.build import build, quiet_lightning

            quiet_lightning()
            build(cfg)  # pretrains the generator and caches it for the training jobs
            return {"status": "complete", "wall": time.perf_counter() - t0}
        summary = run_training(cfg, Path(payload["path"]))
        return {"status": summary.get("status", "complete"), "wall": time.perf_counter() - t0}
    except Exception as err:  # reported with the job; the check goes on
        return {"status": "failed", "wall": time.perf_counter() - t0, "error": f"{type(err).__name__}: {err}"}


def _outcome(job: Job, res: dict[str, Any]) -> Outcome:
    return Outcome(job.key, res["status"], float(res.get("wall", 0.0)), str(res.get("error", "")))


class Executor:
    """Runs jobs and reports each outcome as it arrives."""

    name = "executor"

    def run(self, jobs: list[Job], report: Report) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class Inline(Executor):
    """Every job in this process, one after another."""

    name = "inline"

    def run(self, jobs: list[Job], report: Report) -> None:
        for job in jobs:
            report(job, _outcome(job, run_job(job_payload(job))))


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Processes(Executor):
    """A process pool on this machine (``workers``: null = the cores available)."""

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        check(workers is None or is_int(workers, 1), "executor.workers", workers,
              "null (the cores available) or an integer >= 1")
        self.workers = workers or available_cores()

    def describe(self) -> str:
        return f"processes ({self.workers} workers)"

    def run(self, jobs: list[Job], report: Report) -> None:
        if self.workers == 1 or len(jobs) <= 1:
            Inline().run(jobs, report)
            return
        mp = multiprocessing.get_context("forkserver")
        mp.set_forkserver_preload(["ptforget.train", "ptforget.module"])
        by_key = {j.key: j for j in jobs}
        pool = mp.Pool(min(self.workers, len(jobs)), initializer=_quiet_worker)
        try:
            for key, res in pool.imap_unordered(_keyed_run, [(j.key, job_payload(j)) for j in jobs]):
                report(by_key[key], _outcome(by_key[key], res))
            pool.close()
        except BaseException:
            pool.terminate()  # workers get SIGTERM: a run in flight checkpoints and stops
            raise
        finally:
            pool.join()


def _quiet_worker() -> None:
    """A pool worker leaves Ctrl-C to the check (which stops the pool) and dies of SIGTERM between runs without a
    traceback; a run in flight handles both itself (it checkpoints, ``ptforget.interrupt``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _keyed_run(item: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    key, payload = item
    try:
        return key, run_job(payload)
    except RunInterrupted as err:  # the run checkpointed on the signal: the check reports it, not each worker
        os._exit(err.exit_code)


class Submitit(Executor):
    """One submitit job per training job; results are read back from the run folders.

    Args:
        cluster: ``local`` (subprocesses on this machine) or ``slurm``.
        folder: submitit's log folder (relative paths: inside the check's output folder).
        parameters: submitit executor parameters (e.g. ``timeout_min``, ``slurm_partition``, ``gpus_per_node``).
        poll_s: seconds between polls of the jobs' states.
        unknown_s: a SLURM job whose state stays unknown this long (sacct stopped answering) is reported failed,
            so that the check never waits forever on a job that died without a result.
    """

    name = "submitit"

    def __init__(self, cluster: str = "local", folder: str = "submitit", parameters: dict[str, Any] | None = None,
                 poll_s: float = 1.0, unknown_s: float = 600.0) -> None:
        check(cluster in ("local", "slurm"), "executor.cluster", cluster, "one of 'local', 'slurm'")
        check(isinstance(unknown_s, int | float) and unknown_s > 0, "executor.unknown_s", unknown_s,
              "a number of seconds > 0")
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError("executor", f"submitit_{cluster}",
                              "inline or processes (submitit is not installed: pip install 'ptforget[launchers]')"
                              ) from None
        self.cluster, self.folder, self.parameters, self.poll_s = cluster, folder, dict(parameters or {}), poll_s
        self.unknown_s = float(unknown_s)
        self.out: Path | None = None

    def describe(self) -> str:
        return f"submitit ({self.cluster})"

    def run(self, jobs: list[Job], report: Report) -> None:
        import submitit

        if self.cluster == "slurm":
            require_accounting()
        folder = Path(self.folder)
        if not folder.is_absolute() and self.out is not None:
            folder = self.out / folder
        ex = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        ex.update_parameters(**{k: v for k, v in self.parameters.items() if v is not None})
        fn = TrainJob()
        with ex.batch():
            handles = [(job, ex.submit(fn, job_payload(job))) for job in jobs]
        pending = list(handles)
        unknown_since: dict[str, float] = {}
        try:
            while pending:
                still = []
                for job, h in pending:
                    if h.done():
                        try:
                            res = h.result()
                        except Exception as err:  # the job crashed outside run_job (killed, out of memory)
                            res = {"status": "failed", "error": " ".join(f"{type(err).__name__}: {err}".split())}
                        report(job, _outcome(job, res))
                    elif self.cluster == "slurm" and self._lost(h, unknown_since):
                        h.cancel(check=False)
                        report(job, Outcome(job.key, "failed", error=f"SLURM job {h.job_id}: its state has been "
                                            f"unknown for {self.unknown_s:.0f} s (does sacct answer? submitit "
                                            "needs SLURM accounting); cancelled"))
                    else:
                        still.append((job, h))
                pending = still
                if pending:
                    time.sleep(self.poll_s)
        except BaseException:
            for _, h in pending:
                h.cancel(check=False)
            raise

    def _lost(self, handle: Any, since: dict[str, float]) -> bool:
        """True once the job's state has stayed UNKNOWN for ``unknown_s`` (its clock restarts on any known state)."""
        if handle.state != "UNKNOWN":
            since.pop(handle.job_id, None)
            return False
        return time.monotonic() - since.setdefault(handle.job_id, time.monotonic()) > self.unknown_s


def require_accounting() -> None:
    """ConfigError unless ``sacct`` answers: submitit learns a SLURM job's end from accounting, and without it a job
    that dies without a result would be waited for forever."""
    import subprocess

    try:
        p = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=60)
        problem = None if p.returncode == 0 else (p.stderr.strip() or f"exit status {p.returncode}")
    except (OSError, subprocess.TimeoutExpired) as err:
        problem = str(err)
    if problem is not None:
        raise ConfigError("executor", "submitit_slurm", "a SLURM with accounting that sacct can read (sacct "
                          f"failed: {' '.join(problem.split())}; see docs/cluster.md), or executor=processes")


class TrainJob:
    """A submitit-callable training job; on preemption or timeout submitit requeues it and it resumes."""

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        from ptforget import interrupt

        with interrupt.submitit_exit():  # a signal: exit 128 + N, or (preemption) checkpoint and requeue
            return run_job(payload)

    def checkpoint(self, payload: dict[str, Any]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, payload)  # run_training resumes from last.ckpt


def jobs_left(jobs: Iterable[Job], done: set[str]) -> list[Job]:
    return [j for j in jobs if j.key not in done]
