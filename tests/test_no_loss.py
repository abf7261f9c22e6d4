"""Nothing lost, nothing silently wrong (issue 13): the pretrain cache, reused folders, signals, foreign
checkpoints, the secondary log, environment faults, W&B without a network, ptforget-report on bad files and the
permissions of result files. In-process and small: GMM / MDN runs of a few dozen steps."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from ptforget import cli, interrupt, report, validate
from ptforget.errors import ConfigError
from ptforget.generators import MixtureDensityNetwork
from ptforget.generators import pretrain as pretrain_mod
from ptforget.io import file_lock, read_json, write_json
from ptforget.module import PostTrainModule
from ptforget.tasks import TwoModeTask
from ptforget.train import RunDirError, run_training
from tests.conftest import compose_cfg

HOLD_LOCK = """
import fcntl, os, pathlib, shutil, sys, time
lock, marker, src, dst = sys.argv[1:5]
fd = os.open(lock, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"4242@elsewhere")
pathlib.Path(marker).touch()
time.sleep(float(sys.argv[5]))
if src != "-":
    shutil.copy(src, dst)
os.close(fd)
"""


def _hold_lock(lock: Path, tmp_path: Path, seconds: float = 1.0, src: str = "-", dst: str = "-"):
    """A plain Python process (no torch) that holds ``lock`` for ``seconds`` and then copies src to dst."""
    marker = tmp_path / f"locked-{lock.name}"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock), str(marker), src, dst, str(seconds)])
    while not marker.exists():
        assert proc.poll() is None
    return proc


# ---------------------------------------------------------------------------------------------- 1. pretrain cache
def _mdn(cache: Path, steps: int = 30, lr: float = 3e-3) -> MixtureDensityNetwork:
    task = TwoModeTask(dim=2, delta=4.0)
    return MixtureDensityNetwork(task, pretrain={"steps": steps, "batch": 64, "lr": lr, "seed": 0},
                                 cache_dir=str(cache))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _tamper(kind: str, path: Path) -> None:
    blob = torch.load(path, weights_only=True)
    state = blob["state"]
    name = next(iter(state))
    if kind == "extra_key":
        state["stale.extra"] = torch.zeros(3)
    elif kind == "zeroed_wrong_shape":
        for k in state:
            state[k] = torch.zeros_like(state[k])
        state[name] = torch.zeros(7, 7)
    elif kind == "nan_weights":
        state[name] = torch.full_like(state[name], float("nan"))
    elif kind == "bit_flip":  # the checksum catches a change the shapes cannot
        state[name] = state[name] + 1e-3
    elif kind == "other_version":
        blob["key"] = "0123456789abcdef"
    torch.save(blob, path)


@pytest.mark.parametrize("kind", ["extra_key", "zeroed_wrong_shape", "nan_weights", "bit_flip", "other_version"])
def test_a_bad_pretrain_cache_is_rebuilt_from_a_fresh_model(tmp_path, kind, caplog):
    clean = _weights(_mdn(tmp_path / "clean"))
    (path,) = (tmp_path / "clean").glob("mdn-*.pt")
    _tamper(kind, path)
    rebuilt = _mdn(tmp_path / "clean")
    assert rebuilt.pretrain_stats["pretrain_cached"] == 0.0 and "rebuilding pretrain cache" in caplog.text
    after = _weights(rebuilt)
    assert after.keys() == clean.keys() and all(torch.equal(after[k], clean[k]) for k in clean)
    again = _mdn(tmp_path / "clean")  # the rewritten file is sound and holds the clean weights
    assert again.pretrain_stats["pretrain_cached"] == 1.0
    assert all(torch.equal(_weights(again)[k], clean[k]) for k in clean)


def test_the_cache_key_names_the_code_version(tmp_path, monkeypatch):
    model = _mdn(tmp_path, steps=0)
    task = TwoModeTask(dim=2, delta=4.0)
    args = ("mdn", {"K": 2}, task, {"steps": 30})
    key = pretrain_mod.cache_key(*args, pretrain_mod.code_version(model))
    monkeypatch.setattr(pretrain_mod, "CACHE_FORMAT", pretrain_mod.CACHE_FORMAT + 1)
    assert pretrain_mod.cache_key(*args, pretrain_mod.code_version(model)) != key


def test_non_finite_pretraining_is_never_cached(tmp_path):
    model = _mdn(tmp_path, steps=5, lr=1e30)
    assert not list(tmp_path.glob("*.pt"))
    assert not all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())


def test_a_second_process_waits_for_the_pretraining_and_reads_its_result(tmp_path):
    """While another process holds the cache's lock (and writes the file), pretraining waits, then loads it."""
    _mdn(tmp_path / "ready")
    (src,) = (tmp_path / "ready").glob("mdn-*.pt")
    (tmp_path / "shared").mkdir()
    proc = _hold_lock(tmp_path / "shared" / f"{src.name}.lock", tmp_path, 1.0, str(src), str(tmp_path / "shared"))
    model = _mdn(tmp_path / "shared")
    proc.wait()
    assert model.pretrain_stats["pretrain_cached"] == 1.0  # it read what the other process wrote


# ---------------------------------------------------------------------------------------------- 2. run folders
TINY = ("trainer.max_steps=40", "eval_every=20")


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


def test_a_sweep_folder_reused_with_another_job_list_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    for i, seed in enumerate((7, 8)):
        run_training(compose_cfg(*TINY, f"seed={seed}"), sweep / str(i))
    before = _files(sweep)
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(["-m", *TINY, "seed=9", f"hydra.sweep.dir={sweep}"], "train", validate.preflight)
    assert err.value.key == "hydra.sweep.dir" and "job 0" in str(err.value) and "another run" in str(err.value)
    assert cli.preflight_argv(["-m", *TINY, "seed=7,8", f"hydra.sweep.dir={sweep}"], "train", validate.preflight) == 2
    assert _files(sweep) == before


def test_another_config_in_a_run_folder_is_refused_and_nothing_changes(tmp_path):
    run_training(compose_cfg(*TINY), tmp_path)
    before = _files(tmp_path)
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv([*TINY, "seed=3", f"hydra.run.dir={tmp_path}"], "train", validate.preflight)
    assert err.value.key == "hydra.run.dir" and "holds a complete run" in str(err.value)
    with pytest.raises(RunDirError):
        run_training(compose_cfg(*TINY, "seed=3"), tmp_path)
    assert _files(tmp_path) == before


def test_a_folder_another_process_is_using_is_refused(tmp_path):
    proc = _hold_lock(tmp_path / ".ptforget.lock", tmp_path, 30.0)
    try:
        with pytest.raises(RunDirError, match="4242@elsewhere"):
            run_training(compose_cfg(*TINY), tmp_path)
        with pytest.raises(ConfigError, match="no other process is using"):
            cli.preflight_argv([*TINY, f"hydra.run.dir={tmp_path}"], "train", validate.preflight)
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "summary.json").exists()


def test_a_finished_run_is_reported_without_starting_hydra(tmp_path, monkeypatch, capsys):
    """Nothing is written (so a read-only folder works): no .hydra/, no log, every file byte- and time-identical."""
    run_training(compose_cfg(*TINY), tmp_path)
    before = _files(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ptforget-train", *TINY, "quiet=true", f"hydra.run.dir={tmp_path}"])
    assert cli.train_main() is None
    assert _files(tmp_path) == before and not (tmp_path / ".hydra").exists()


# ---------------------------------------------------------------------------------------------- 3/7. signals, logs
def _signal_at(step: int, signum: int):
    orig = PostTrainModule._optimizer_step

    def send(self):
        if self.step == step:
            os.kill(os.getpid(), signum)
        orig(self)

    return orig, send


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_checkpoint_exits_non_zero_and_the_rerun_resumes_identically(tmp_path, signum):
    cfg = compose_cfg("trainer.max_steps=160", "eval_every=25", "checkpoint_every=50", "logger=csv")
    reference = run_training(cfg, tmp_path / "ref")
    orig, send = _signal_at(117, signum)  # mid-chunk, after the step-100 checkpoint
    PostTrainModule._optimizer_step = send
    try:
        with pytest.raises(interrupt.RunInterrupted) as err:
            run_training(cfg, tmp_path / "run")
    finally:
        PostTrainModule._optimizer_step = orig
    assert err.value.exit_code == 128 + signum and "step 118" in str(err.value)
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["step"] == 118
    assert read_json(tmp_path / "run" / "summary.json")["status"] == "interrupted"
    resumed = run_training(cfg, tmp_path / "run")
    assert resumed["resumed_from_step"] == 118 and resumed["final"] == reference["final"]
    for name in ("trajectory.csv", "lightning/metrics.csv"):  # the secondary log is whole after the resume
        run, ref = (tmp_path / d / name for d in ("run", "ref"))
        assert sorted(run.read_text().splitlines()) == sorted(ref.read_text().splitlines()), name


def test_an_interrupted_sweep_says_which_jobs_did_not_run(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    orig, send = _signal_at(30, signal.SIGTERM)
    monkeypatch.setattr(PostTrainModule, "_optimizer_step", send)
    monkeypatch.setattr(sys, "argv", ["ptforget-train", "-m", "seed=0,1,2", "trainer.max_steps=60", "eval_every=20",
                                      "quiet=true", "logger=none", f"hydra.sweep.dir={sweep}"])
    with pytest.raises(SystemExit) as exc:
        cli.train_main()
    assert exc.value.code == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "interrupted by SIGTERM at step 31" in line and "interrupted: job 0" in line
    assert "did not run: jobs 1-2" in line
    monkeypatch.setattr(PostTrainModule, "_optimizer_step", orig)
    cli.train_main()  # the same command resumes job 0 and runs the others
    assert [read_json(sweep / str(i) / "summary.json")["status"] for i in range(3)] == ["complete"] * 3
    assert read_json(sweep / "0" / "summary.json")["resumed_from_step"] == 31


# ---------------------------------------------------------------------------------------------- 8. foreign ckpt
def _foreign(kind: str, path: Path) -> None:
    if kind == "a_list":
        torch.save([1, 2, 3], path)
    elif kind == "no_optimizer":
        torch.save({"step": 20, "weights": {}, "config_hash": "x"}, path)
    elif kind == "garbage":
        path.write_bytes(os.urandom(256))
    elif kind == "another_model":  # a real checkpoint whose parameters have other shapes
        cfg = compose_cfg(*TINY, "task.dim=3", "checkpoint_every=20")
        orig, crash = _signal_at(30, signal.SIGTERM)
        PostTrainModule._optimizer_step = crash
        try:
            with pytest.raises(interrupt.RunInterrupted):
                run_training(cfg, path.parent / "other")
        finally:
            PostTrainModule._optimizer_step = orig
        state = torch.load(path.parent / "other" / "last.ckpt", weights_only=False)
        state["config_hash"] = run_hash_of(compose_cfg(*TINY))
        torch.save(state, path)


def run_hash_of(cfg):
    from ptforget.train import config_hash

    return config_hash(cfg)


@pytest.mark.parametrize("kind", ["a_list", "no_optimizer", "garbage", "another_model"])
def test_a_foreign_checkpoint_is_moved_aside_and_the_run_restarts(tmp_path, kind, caplog):
    run = tmp_path / "run"
    run.mkdir()
    _foreign(kind, run / "last.ckpt")
    saved = (run / "last.ckpt").read_bytes()
    summary = run_training(compose_cfg(*TINY), run)
    assert summary["status"] == "complete" and summary["resumed_from_step"] is None
    assert [p.read_bytes() for p in run.glob("last.ckpt.aside-*")] == [saved]
    assert "moved" in caplog.text and "aside" in caplog.text


# ---------------------------------------------------------------------------------------------- 10. environment
def test_a_full_disk_ends_with_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    import ptforget.train as train_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "summary.json"))

    monkeypatch.setattr(train_mod, "write_outputs", full)
    monkeypatch.setattr(sys, "argv", ["ptforget-train", *TINY, "quiet=true", "logger=none",
                                      f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exc:
        cli.train_main()
    assert exc.value.code == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ptforget:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in lines[0]


def test_an_unwritable_folder_is_named_before_anything_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv([f"hydra.run.dir={blocker}/run"], "train", validate.preflight)
    assert err.value.key == "hydra.run.dir" and "not a directory" in str(err.value)


# ---------------------------------------------------------------------------------------------- 11. W&B
def test_wandb_online_without_a_network_logs_offline(tmp_path, monkeypatch):
    import wandb

    from ptforget import build
    from ptforget.wandb_runs import log_runs

    modes = []

    class Run:
        dir = str(tmp_path / "wandb" / "run" / "files")
        summary: typing.ClassVar[dict] = {}

        def log(self, *a, **k):
            pass

        def finish(self):
            pass

    def fake_init(**kwargs):
        modes.append(kwargs["mode"])
        return Run()

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setattr(build, "WANDB_PROBE_S", 2.0)
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_MODE", "")  # set but empty: wandb would reject it with a long traceback
    assert not build.wandb_reachable(1.0)
    cfg = compose_cfg("logger=wandb", "wandb_mode=online")
    assert build.make_logger(cfg, tmp_path) is False and "WANDB_MODE" not in os.environ
    log_runs(cfg, tmp_path, {"status": "complete", "seed": 0, "final": {"old_mass": 0.5}})
    assert modes == ["offline"]


def test_a_wandb_mode_in_the_environment_is_checked():
    os.environ["WANDB_MODE"], old = "sometimes", os.environ.get("WANDB_MODE")
    try:
        with pytest.raises(ConfigError) as err:
            cli.preflight_argv(["logger=wandb"], "train", validate.preflight)
        assert err.value.key.startswith("WANDB_MODE")
    finally:
        os.environ["WANDB_MODE"] = old if old is not None else "disabled"


# ---------------------------------------------------------------------------------------------- 12. report
def _runs(root: Path) -> None:
    for name, summary in {"a": {"status": "complete", "seed": 0, "final": [1, 2]},
                          "b": {"status": "complete", "seed": 1, "final": {"old_mass": 0.4}},
                          "c": {"status": "complete", "seed": 2, "final": {"old_mass": 0.5}}}.items():
        write_json(root / name / "summary.json", summary)
    (root / "b" / "trajectory.csv").write_bytes(b"\xff\xfe\x00garbage" * 40)


def test_report_skips_and_lists_unreadable_runs(tmp_path, capsys):
    _runs(tmp_path)
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "skipped unreadable run a" in err and "skipped unreadable run b" in err
    rows = {r["run"]: r["status"] for r in report.collect(tmp_path)}
    assert rows == {"a": "unreadable", "b": "unreadable", "c": "complete"}
    assert "unreadable" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize(("args", "says"), [(["--metrics", "nosuch"], "metrics: 'nosuch'"),
                                            (["--by", "nosuch"], "by: 'nosuch'"),
                                            (["--out", "/proc/forbidden/x"], "out=/proc/forbidden/x")])
def test_report_options_are_validated_before_anything_is_written(tmp_path, capsys, args, says):
    _runs(tmp_path)
    assert report.main([str(tmp_path), *args, "--no-figures"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptforget-report: error: ") and says in lines[0]
    assert not (tmp_path / "report").exists()


# ---------------------------------------------------------------------------------------------- 15. permissions
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "summary.json", {"a": 1})
        with file_lock(tmp_path / "x.lock"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "x.lock").stat().st_mode & 0o777 == mode
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 1}


# ---------------------------------------------------------------------------------------------- 6. theory bounds
def test_a_step_too_large_for_the_exact_flow_fails_within_its_bounded_grid():
    """Without the bound the flow's grid followed the means outwards until memory ran out (lr=10)."""
    from ptforget.theory import population_flow

    with pytest.raises(FloatingPointError, match=r"diverged at step (\d)\b"):
        population_flow("fkl", 4.0, 0.5, None, 1.0, lr=10.0, steps=10**5)


def test_the_ttt_fixed_point_ends_for_any_anchor_strength():
    from ptforget.theory import ttt_fixed_point

    for lam in (1e-300, 1e-12, 1.0, 1e300):
        try:
            b = ttt_fixed_point(1.0, lam, 0.0, 1.0, 0.5)
        except ValueError:
            continue
        assert 0.0 <= b <= 1.0


def test_the_default_theory_passes_its_budget_and_a_long_one_does_not():
    from ptforget.theory import TheoryConfig
    from ptforget.theory.budget import theory_budget

    assert cli.preflight_argv([], "theory", validate.validate_theory) == 1
    small, big = theory_budget(TheoryConfig()), theory_budget(TheoryConfig(steps=10**8))
    assert small["seconds"] < 600 and big["seconds"] > 100 * small["seconds"] and big["time_driver"] == "steps"


def test_errors_cross_a_process_pool_whole():
    """The check runs training in a process pool: its errors and interrupts must unpickle with their fields."""
    import pickle

    err = pickle.loads(pickle.dumps(RunDirError("run_dir", "/x", "a folder without another config's run")))
    assert isinstance(err, RunDirError) and (err.key, err.value) == ("run_dir", "/x")
    stop = pickle.loads(pickle.dumps(interrupt.RunInterrupted(signal.SIGTERM, "interrupted by SIGTERM at step 3")))
    assert stop.exit_code == 143 and "step 3" in str(stop)
