"""The cluster path without a cluster: a preempted check job is resumed before its rows are judged, an unfinished
run is never judged, submitit jobs end with 128 + N (or checkpoint, then requeue on preemption), the check refuses
a SLURM without accounting in one line, and the pretrain cache's folder is not part of a run's identity."""

from __future__ import annotations

import signal
import sys

import pytest
import torch

from ptforget import interrupt
from ptforget.check import engine
from ptforget.check.executors import Inline, Outcome, Submitit, run_job
from ptforget.check.plan import job_payload
from ptforget.check.runs import UnfinishedRun, load_runs
from ptforget.errors import ConfigError
from ptforget.io import read_json
from ptforget.module import PostTrainModule
from ptforget.train import config_hash, run_training
from tests.check.conftest import check_config, train_compose
from tests.check.test_engine import _register_toy
from tests.conftest import compose_cfg
from tests.test_no_loss import _signal_at


class _PreemptFirst(Inline):
    """Inline, except that the first training job gets SIGTERM at step 30 (a preempted SLURM job: it saves its
    checkpoint and its process ends without a result)."""

    def __init__(self) -> None:
        self.preempted: list[str] = []

    def run(self, jobs, report) -> None:
        for job in jobs:
            if self.preempted or job.kind != "train":
                report(job, Outcome(job.key, **run_job(job_payload(job))))
                continue
            orig, send = _signal_at(30, signal.SIGTERM)
            PostTrainModule._optimizer_step = send
            try:
                with pytest.raises(interrupt.RunInterrupted):
                    run_job(job_payload(job))
            finally:
                PostTrainModule._optimizer_step = orig
            self.preempted.append(job.key)
            report(job, Outcome(job.key, "failed", error="UncompletedJobError: preempted"))


@pytest.mark.usefixtures("registry_guard")
def test_a_preempted_job_is_resumed_before_its_rows_are_judged(tmp_path, monkeypatch):
    _register_toy()
    reference = engine.run_check(check_config("claims=[TOY1]", "executor=inline"), tmp_path / "ref", train_compose)
    ex = _PreemptFirst()
    monkeypatch.setattr(engine, "make_executor", lambda cfg: ex)
    got = engine.run_check(check_config("claims=[TOY1]", "executor=inline"), tmp_path / "run", train_compose)
    assert ex.preempted and got["errors"] == []
    assert [(v["values"], v["verdict"]) for v in got["verdicts"]] == \
        [(v["values"], v["verdict"]) for v in reference["verdicts"]]
    members = sorted((tmp_path / "run" / "runs").rglob("seed*/summary.json"))
    assert len(members) == 3 and all(read_json(m)["resumed_from_step"] == 31 for m in members)


class _DieFirst(Inline):
    """Inline, except that the first training job's process dies before its run begins (no summary at all)."""

    def __init__(self) -> None:
        self.died: list[str] = []

    def run(self, jobs, report) -> None:
        for job in jobs:
            if self.died or job.kind != "train":
                report(job, Outcome(job.key, **run_job(job_payload(job))))
                continue
            self.died.append(job.key)
            report(job, Outcome(job.key, "failed", error="UncompletedJobError: Job 7 has not produced any output"))


@pytest.mark.usefixtures("registry_guard")
def test_a_job_that_died_before_its_run_began_is_run_again(tmp_path, monkeypatch):
    _register_toy()
    ex = _DieFirst()
    monkeypatch.setattr(engine, "make_executor", lambda cfg: ex)
    got = engine.run_check(check_config("claims=[TOY1]", "executor=inline"), tmp_path, train_compose)
    assert ex.died and got["errors"] == [] and got["verdicts"][0]["n"] == 3


def test_an_unfinished_run_is_never_judged(tmp_path):
    cfg = compose_cfg("trainer.max_steps=80", "eval_every=20")
    orig, send = _signal_at(40, signal.SIGTERM)
    PostTrainModule._optimizer_step = send
    try:
        with pytest.raises(interrupt.RunInterrupted):
            run_training(cfg, tmp_path)
    finally:
        PostTrainModule._optimizer_step = orig
    assert read_json(tmp_path / "summary.json")["status"] == "interrupted"
    with pytest.raises(UnfinishedRun, match="status 'interrupted'"):
        load_runs(tmp_path, [0])
    run_training(cfg, tmp_path)
    (run,) = load_runs(tmp_path, [0])
    assert run.summary["status"] == "complete" and run.summary["resumed_from_step"] == 41


def test_a_submitit_job_exits_128_plus_the_signal(monkeypatch):
    with pytest.raises(interrupt.RunInterrupted):  # outside a submitit job the exception passes unchanged
        with interrupt.submitit_exit():
            raise interrupt.RunInterrupted(signal.SIGTERM)
    monkeypatch.setenv("SUBMITIT_FOLDER", "/nowhere")
    with pytest.raises(SystemExit) as out:
        with interrupt.submitit_exit():
            raise interrupt.RunInterrupted(signal.SIGTERM)
    assert out.value.code == 143


def test_preemption_in_a_submitit_job_checkpoints_at_the_step_then_hands_over_to_submitit(tmp_path, monkeypatch):
    """USR2 (submitit's preemption signal) is deferred like SIGTERM: last.ckpt at the next step boundary, and only
    then submitit's handler runs (it would requeue the job); the requeued job resumes bit-identically."""
    cfg = compose_cfg("trainer.max_steps=80", "eval_every=20")
    reference = run_training(cfg, tmp_path / "ref")
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path))
    calls = []

    def submitit_handler(signum, frame):  # stands in for submitit's checkpoint_and_try_requeue
        calls.append((signum, torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["step"]))
        sys.exit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    orig, send = _signal_at(50, signal.SIGUSR2)
    PostTrainModule._optimizer_step = send
    try:
        with pytest.raises(SystemExit) as out:
            with interrupt.submitit_exit():
                run_training(cfg, tmp_path / "run")
    finally:
        PostTrainModule._optimizer_step = orig
        signal.signal(signal.SIGUSR2, previous)
    assert out.value.code == -1 and calls == [(signal.SIGUSR2, 51)]
    assert signal.getsignal(signal.SIGUSR2) is previous
    resumed = run_training(cfg, tmp_path / "run")
    assert resumed["resumed_from_step"] == 51 and resumed["final"] == reference["final"]


def test_the_check_refuses_a_slurm_without_accounting_in_one_line(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    (stub / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}:/usr/bin:/bin")
    with pytest.raises(ConfigError, match="accounting storage is disabled") as err:
        Submitit(cluster="slurm").run([], lambda job, out: None)
    assert "\n" not in str(err.value) and "executor" in str(err.value)


def test_the_pretrain_cache_folder_is_not_part_of_a_run_s_identity(tmp_path):
    a = compose_cfg("generator=flow", f"generator.cache_dir={tmp_path / 'a'}")
    b = compose_cfg("generator=flow", f"generator.cache_dir={tmp_path / 'b'}")
    c = compose_cfg("generator=flow", f"generator.cache_dir={tmp_path / 'a'}", "generator.pretrain.steps=7")
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_a_slurm_sweep_s_jobs_are_found_for_cancelling(tmp_path):
    from ptforget import cli

    for name in ("12_0", "12_1", "13_0", ".submission_file_x.sh"):
        (tmp_path / ".submitit" / name).mkdir(parents=True)
    pre = cli.Preflight("train", True, None, {"sweep": {"dir": str(tmp_path)}, "launcher": {
        "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}}, {})
    assert cli._slurm_sweep_jobs(pre) == ["12", "13"]
    pre.hydra["launcher"]["_target_"] = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert cli._slurm_sweep_jobs(pre) == []

