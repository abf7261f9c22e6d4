"""Nothing lost, nothing silently wrong, nothing run that a user did not mean (issue 25): duplicated and damaged
runs in a report, re-checks that fail, are damaged or run at once, planted pickles and links, ``_target_`` that is
not its group's class, the theory's validation, memory terms, separations the region view cannot resolve, and the
one-line errors of the entry points. Each test fails on 015d0e2."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import pytest

from ptforget import cli, report, resources, validate
from ptforget.check import Rival, Row, claim, discriminate, run_check
from ptforget.errors import ConfigError
from ptforget.io import file_lock, read_json, write_json
from ptforget.train import RunDirError, run_training
from tests.check.conftest import check_config, train_compose
from tests.conftest import compose_cfg
from tests.test_no_loss import TINY, _files, _hold_lock


# ---------------------------------------------------------------------------------------------- 1. report
def _run(root: Path, name: str, seed: int, old_mass: object, config_hash: str | None = None,
         trajectory: bytes | None = None) -> None:
    write_json(root / name / "summary.json", {
        "status": "complete", "seed": seed, "config_hash": config_hash or f"h{seed}", "objective": "fkl",
        "final": {"old_mass": old_mass, "weight": 0.5}, "overrides": ["objective=fkl", f"seed={seed}"]})
    (root / name / "trajectory.csv").write_bytes(b"step,old_mass\n0,0.5\n10,0.4\n" if trajectory is None
                                                 else trajectory)


def test_a_sweep_launched_twice_into_one_study_counts_each_seed_once(tmp_path, capsys):
    """seed=0,1,2 and then seed=0,1 again: n=3 with the interval of three seeds, the copies listed."""
    for i, (seed, mass) in enumerate([(0, 0.30), (1, 0.34), (2, 0.41)]):
        _run(tmp_path / "first", str(i), seed, mass)
    for i, (seed, mass) in enumerate([(0, 0.30), (1, 0.34)]):
        _run(tmp_path / "second", str(i), seed, mass)  # same config hash and seed: the same run again
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    (agg,) = report.write_report(tmp_path, tmp_path / "out", figures=False, by=[])["aggregate"]
    from ptforget.stats import mean_ci

    assert agg["n"] == 3 and agg["old_mass_n"] == 3
    assert agg["old_mass_ci"] == pytest.approx(mean_ci([0.30, 0.34, 0.41])["ci"])
    err = capsys.readouterr().err
    assert "counted once: second/0 holds the same run as first/0" in err
    assert "Duplicate runs counted once (2)" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("bad", [None, "garbage", float("nan")])
def test_a_metric_missing_in_one_summary_shows_its_own_n(tmp_path, bad):
    _run(tmp_path, "a", 0, 0.3)
    _run(tmp_path, "b", 1, 0.4)
    _run(tmp_path, "c", 2, bad)
    res = report.write_report(tmp_path, tmp_path / "out", figures=False, by=[])
    (agg,) = res["aggregate"]
    assert agg["n"] == 3 and agg["old_mass_n"] == 2
    from ptforget.terminal import row_cells

    cell = row_cells(agg, [], ["old_mass"])[1]
    assert cell.endswith("(n=2)"), cell
    assert "(n=2)" in res["table"]


@pytest.mark.parametrize("content", [b"", b"step,old_mass\n"])
def test_an_empty_trajectory_is_not_a_complete_run(tmp_path, content):
    _run(tmp_path, "a", 0, 0.3)
    _run(tmp_path, "b", 1, 0.4, trajectory=content)
    rows = {r["run"]: r for r in report.collect(tmp_path)}
    assert rows["a"]["status"] == "complete"
    assert rows["b"]["status"] == "unreadable" and "trajectory.csv" in rows["b"]["reason"]


# ---------------------------------------------------------------------------------------------- 2-4. re-checks
STATE: dict[str, object] = {"fail": False}


def _claims() -> None:
    """Two claims that train nothing: HA (which fails when STATE says so) and HB."""

    @claim("HA", "A claim a re-check may fail to judge")
    def ha(ctx, got):
        if STATE["fail"]:
            raise RuntimeError("the re-check broke")
        yield Row("ha row", "gmm", "theory", "s", "x", [1.0, 1.1, 0.9],
                  discriminate(1.0, Rival("zero", 0.0, "a test rival"), margin=0.3, margin_why="a test band"))

    @claim("HB", "Another claim")
    def hb(ctx, got):
        yield Row("hb row", "gmm", "theory", "s", "x", [2.0, 2.1, 1.9],
                  discriminate(2.0, Rival("zero", 0.0, "a test rival"), margin=0.3, margin_why="a test band"))


def _check(tmp_path: Path, claims: str) -> dict:
    return run_check(check_config(f"claims=[{claims}]", "executor=inline"), tmp_path, train_compose)


def _rows(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for v in read_json(path / "verdicts.json")["verdicts"]:
        out.setdefault(v["claim"], []).append({k: v[k] for k in ("title", "values", "verdict")})
    return out


@pytest.fixture
def checked(tmp_path, registry_guard):
    STATE["fail"] = False
    _claims()
    _check(tmp_path, "HA,HB")
    yield tmp_path
    STATE["fail"] = False


def test_a_failed_recheck_keeps_every_earlier_row(checked):
    before = _rows(checked)
    STATE["fail"] = True
    payload = _check(checked, "HA")
    assert payload["errors"] and payload["errors"][0].startswith("HA:")
    assert _rows(checked) == before  # HA could not be judged now: its earlier rows stay
    text = (checked / "report.md").read_text()
    assert "ha row" in text and "hb row" in text


@pytest.mark.parametrize("damage", ["truncate", "no title"])
def test_a_damaged_verdicts_json_is_named_and_kept_aside(checked, damage):
    path = checked / "verdicts.json"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:
        d = json.loads(path.read_text())
        del d["verdicts"][1]["title"]
        path.write_text(json.dumps(d))
    damaged = path.read_bytes()
    payload = _check(checked, "HA")
    (error,) = [e for e in payload["errors"] if "damaged" in e]
    (aside,) = checked.glob("verdicts.json.damaged-*")
    assert aside.name in error and aside.read_bytes() == damaged  # every earlier row is still on disk
    assert "title" in error if damage == "no title" else "not JSON" in error


def test_a_second_check_in_the_folder_is_refused_and_changes_nothing(checked):
    """A forced interleaving: another process is inside the check (it holds the folder) when this one starts."""
    before = _files(checked)
    markers = checked.with_name(checked.name + "-markers")
    markers.mkdir()
    proc = _hold_lock(checked / ".ptforget-check.lock", markers, 30.0)
    try:
        with pytest.raises(ConfigError, match="no other check is using") as err:
            _check(checked, "HA")
        assert err.value.key == "hydra.run.dir" and "4242@elsewhere" in str(err.value)
    finally:
        proc.kill()
        proc.wait()
    after = {k: v for k, v in _files(checked).items() if not k.startswith(".ptforget-check.lock")}
    assert after == {k: v for k, v in before.items() if not k.startswith(".ptforget-check.lock")}
    assert set(_rows(checked)) == {"HA", "HB"}


def _verdicts_file(tmp_path: Path, verdicts: list, errors: list) -> Path:
    path = tmp_path / "verdicts.json"
    write_json(path, {"profile": {"name": "quick"}, "executor": "inline", "wall_time_s": 1.0, "runs_trained": 0,
                      "runs_reused": 0, "errors": errors, "verdicts": verdicts})
    return path


def test_nothing_judged_never_reads_as_every_row_holds(tmp_path, capsys):
    path = _verdicts_file(tmp_path, [], ["P1: RuntimeError: a", "P2: RuntimeError: b"])
    assert cli.verdicts_main([str(path)]) == 1
    out = capsys.readouterr()
    assert "Every theory row holds" not in out.out and "No theory row was judged" in out.out
    assert "P1: RuntimeError: a" in out.out and "P2: RuntimeError: b" in out.err
    from ptforget.check.render import render_report

    md = render_report({"profile": {"name": "q"}, "runs_trained": 0, "runs_reused": 0, "wall_time_s": 0.0,
                        "errors": ["P1: x"]}, [], {})
    assert "Every theory row holds" not in md and "No theory row was judged" in md and "P1: x" in md


# ---------------------------------------------------------------------------------------------- 6/12. README
README = "# x\n\n<!-- verdicts:start -->\nold\n<!-- verdicts:end -->\n"


@pytest.mark.parametrize(("kind", "says"), [
    ("wrong order", "wrong order"), ("no markers", "found 0 start"), ("missing", "no such file"),
    ("folder", "a folder"), ("read-only", "read-only")])
def test_a_readme_the_block_cannot_go_into_is_one_line_and_unchanged(tmp_path, capsys, kind, says):
    verdicts = _verdicts_file(tmp_path, [], [])
    readme = tmp_path / "README.md"
    text = {"wrong order": "a\n<!-- verdicts:end -->\nb\n<!-- verdicts:start -->\nc\n", "no markers": "plain\n",
            "read-only": README}.get(kind)
    if kind == "folder":
        readme.mkdir()
    elif text is not None:
        readme.write_text(text)
    if kind == "read-only":
        readme.chmod(0o444)
    for _ in range(2):
        assert cli.verdicts_main([str(verdicts), "--readme", str(readme)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and all(ln.startswith("ptforget-verdicts: error: ") and says in ln for ln in err), err
    if text is not None:
        assert readme.read_text() == text  # never doubled


def test_a_verdict_row_without_a_title_is_named(tmp_path, capsys):
    path = _verdicts_file(tmp_path, [{"claim": "P1"}], [])
    assert cli.verdicts_main([str(path)]) == 2
    assert "row 0 has no 'title'" in capsys.readouterr().err


def test_a_folder_holding_files_ptforget_did_not_write_is_refused(tmp_path):
    (tmp_path / "trajectory.csv").write_text("my own data\n")
    with pytest.raises(ConfigError, match="not from a ptforget run") as err:
        cli.preflight_argv([*TINY, f"hydra.run.dir={tmp_path}"], "train", validate.preflight)
    assert err.value.key == "hydra.run.dir"
    assert (tmp_path / "trajectory.csv").read_text() == "my own data\n"
    sweep = tmp_path / "sweep"
    (sweep / "1").mkdir(parents=True)
    (sweep / "1" / "density.png").write_bytes(b"my figure")
    with pytest.raises(ConfigError, match="not from a ptforget run") as err:
        cli.preflight_argv(["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}"], "train", validate.preflight)
    assert err.value.key == "hydra.sweep.dir" and (sweep / "1" / "density.png").read_bytes() == b"my figure"


# ---------------------------------------------------------------------------------------------- 7-8. planted files
class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_planted_pickle_checkpoint_never_runs_and_is_moved_aside(tmp_path, caplog):
    import torch

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"step": 0, "payload": _Planted(marker)}, run / "last.ckpt")
    summary = run_training(compose_cfg(*TINY), run)
    assert not marker.exists()
    assert summary["status"] == "complete" and summary.get("resumed_from_step") in (None, 0)
    (aside,) = run.glob("last.ckpt.aside-*")
    assert aside.name in caplog.text and "without running code" in caplog.text


def test_a_symlinked_lock_is_never_written_through(tmp_path):
    from ptforget.io import PlantedLink

    victim = tmp_path / "victim"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".ptforget.lock").symlink_to(victim)
    with pytest.raises(PlantedLink), file_lock(run / ".ptforget.lock"):
        pass
    with pytest.raises(ConfigError, match="symbolic link") as err:
        cli.preflight_argv([*TINY, f"hydra.run.dir={run}"], "train", validate.preflight)
    assert err.value.key == "hydra.run.dir"
    with pytest.raises(RunDirError, match="symbolic link"):
        run_training(compose_cfg(*TINY), run)
    cache_lock = tmp_path / "cache" / "x.pt.lock"  # the pretraining cache's lock goes through file_lock too
    cache_lock.parent.mkdir()
    cache_lock.symlink_to(victim)
    with pytest.raises(PlantedLink), file_lock(cache_lock):
        pass
    assert victim.read_text() == "precious"


def test_a_planted_link_in_a_check_folder_is_refused(tmp_path, registry_guard):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "check"
    out.mkdir()
    (out / ".ptforget-check.lock").symlink_to(victim)
    _claims()
    with pytest.raises(ConfigError, match="symbolic link"):
        _check(out, "HB")
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------------------------------------- 9-10. _target_
@pytest.mark.parametrize(("entry", "group"), [("train", "objective"), ("train", "generator"), ("train", "task"),
                                              ("theory", "objective"), ("theory", "generator"),
                                              ("check", "executor")])
@pytest.mark.parametrize("target", ["os.system", "ptforget.tasks.TwoModeTask"])  # a callable; another group's class
def test_a_target_outside_its_group_is_refused_before_anything_is_called(tmp_path, entry, group, target):
    marker = tmp_path / "x"
    validator = {"train": validate.preflight, "theory": validate.validate_theory, "check": validate.validate_check}
    if group == "task" and target.endswith("TwoModeTask"):
        target = "ptforget.objectives.ForwardKL"
    argv = [f"{group}._target_={target}"]
    if entry != "check":  # the check takes no added keys at all (refused before the target is looked at)
        argv.append(f"+{group}.command='touch {marker}'")
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(argv, entry, validator[entry])
    assert err.value.key == f"{group}._target_" and "a subclass of" in str(err.value)
    assert not marker.exists()


def test_a_nested_target_in_a_group_is_refused(tmp_path):
    from ptforget.build import check_target

    with pytest.raises(ConfigError, match="nested _target_") as err:
        check_target({"_target_": "ptforget.objectives.ForwardKL",
                      "target": {"_target_": "os.system", "command": "true"}}, "objective")
    assert err.value.key == "objective.target._target_"


@pytest.mark.parametrize(("line", "key"), [("generator.components=1", "generator.components"),
                                           ("task.delta=0", "task.delta"), ("task.delta=1e-30", "task.delta"),
                                           ("theory=abc", "theory"), ("output={tmp}", "output")])
def test_the_theory_refuses_what_training_refuses(tmp_path, line, key):
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv([line.format(tmp=tmp_path)], "theory", validate.validate_theory)
    assert err.value.key == key


# ---------------------------------------------------------------------------------------------- 5/12. separation
@pytest.mark.parametrize("delta", ["0", "1e-30", "0.3", "1e308"])
def test_a_separation_the_region_view_cannot_resolve_is_refused_with_its_range(delta):
    from ptforget.tasks import MIN_DELTA

    with pytest.raises(ConfigError) as err:
        cli.preflight_argv([f"task.delta={delta}"], "train", validate.preflight)
    assert err.value.key == "task.delta" and f"{MIN_DELTA:.3g}" in str(err.value)
    assert 0 < MIN_DELTA < 2  # the smallest separation the check uses stays allowed
    cli.preflight_argv(["task.delta=2"], "train", validate.preflight)


def test_the_minimum_separation_is_where_the_region_mass_shows_a_fifth_of_a_weight_change():
    """Independent check by quadrature: d(old-region mass)/d(beta) at beta* = 1/2 equals REGION_RESOLUTION."""
    import numpy as np

    from ptforget.tasks import MIN_DELTA, REGION_RESOLUTION

    x = np.linspace(-40, 40, 400_001)
    phi = lambda m: np.exp(-0.5 * (x - m) ** 2) / np.sqrt(2 * np.pi)  # noqa: E731
    region = x < 0  # the Bayes region of the old mode at -Delta/2 with equal weights
    sens = np.trapezoid((phi(-MIN_DELTA / 2) - phi(MIN_DELTA / 2)) * region, x)
    assert sens == pytest.approx(REGION_RESOLUTION, abs=1e-6)


# ---------------------------------------------------------------------------------------------- 11. memory
@pytest.mark.parametrize(("line", "key"), [
    ("objective=ttt_discover objective.reuse.enabled=true objective.reuse.seed_states=100000000 "
     "objective.reuse.capacity=100000010", "objective.reuse.seed_states"),
    ("generator=flow generator.pretrain.batch=100000000", "generator.pretrain.batch"),
    ("seeds=100000", "seeds"),
    ("generator=mdn generator.hidden=[100000,100000]", "generator.hidden"),
])
def test_the_memory_estimate_names_the_key_that_needs_it(line, key):
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv([*line.split(), "limits.memory_gb=8"], "train", validate.preflight)
    assert err.value.key == key


def test_chen_seeds_that_cannot_fit_are_refused():
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(["claims=[chen2025]", "profile.chen_seeds=100000000"], "check", validate.validate_check)
    assert err.value.key == "profile.chen_seeds"
    terms = resources.chen_memory(10, 1000, 500, 1000)
    assert resources.dominant(terms)[2] < 1e8  # the quick profile's 10 seeds stay small


def test_an_allocation_failure_ends_in_one_line(monkeypatch, capsys):
    from ptforget.errors import out_of_memory

    def boom(cfg):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 400000040 bytes")

    with pytest.raises(SystemExit) as exc:
        cli.guarded(boom)(None)
    assert exc.value.code == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line.startswith("ptforget: error: out of memory") and "400000040" in line
    assert out_of_memory(ValueError("x")) is None


# ---------------------------------------------------------------------------------------------- 12-13. one line
def test_names_too_long_for_the_file_system_are_one_line():
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv([f"study={'a' * 300}"], "train", validate.preflight)
    assert err.value.key == "study"
    deep = "/tmp/" + "/".join(["b" * 200] * 25)
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv([f"hydra.run.dir={deep}"], "train", validate.preflight)
    assert err.value.key == "hydra.run.dir" and "characters>" in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize(("source", "says"), [
    ("import sys\nsys.exit(0)\n", "SystemExit"),
    ("SEARCHPATH = 12345\n", "SEARCHPATH"),
])
def test_a_broken_plugin_is_one_line_naming_it(tmp_path, monkeypatch, registry_guard, source, says):
    from ptforget import plugins

    name = f"hostile_plugin_{abs(hash(source)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV_VAR, name)
    with pytest.raises(ConfigError) as err:
        plugins.load()
    assert err.value.key == "plugin" and name in str(err.value) and says in str(err.value)


def test_a_plugin_that_registers_a_built_in_claim_id_is_one_line(tmp_path):
    """In a fresh process (the built-in claims not yet imported), as a user meets it."""
    import subprocess

    (tmp_path / "dup_plugin.py").write_text("from ptforget.check import Claim, register\n\n\n@register\n"
                                            "class Mine(Claim):\n    id, title = 'P1', 'mine'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "PTFORGET_PLUGINS": "dup_plugin", "PTFORGET_OUTPUT_DIR": str(tmp_path / "out")}
    proc = subprocess.run([str(Path(sys.executable).with_name("ptforget-theory")), "claims=[P1]"], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "srun" not in ln]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "dup_plugin" in lines[0] and "'P1' is already registered" in lines[0]


def test_a_claim_whose_runs_raise_is_one_line(tmp_path, registry_guard):
    from ptforget.check import Claim, register

    @register
    class Broken(Claim):
        id, title = "HBROKEN", "runs() raises"

        def runs(self, ctx):
            raise RuntimeError("boom")

    with pytest.raises(ConfigError, match="RuntimeError: boom") as err:
        _check(tmp_path, "HBROKEN")
    assert err.value.key == "claims"


@pytest.mark.parametrize("devices", ["2", "-1", "[0,1]"])
def test_more_than_one_device_is_refused_before_lightning_starts_a_second_process(devices):
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(["trainer.accelerator=cpu", f"trainer.devices={devices}"], "train", validate.preflight)
    assert err.value.key == "trainer.devices" and "one process" in str(err.value)


def test_pickle_is_what_the_planted_checkpoint_uses():
    """The planted object really runs code when unpickled without weights_only (so the test above means it)."""
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"ptforget-planted-{os.getpid()}"
    marker.unlink(missing_ok=True)
    pickle.loads(pickle.dumps(_Planted(marker)))
    assert marker.exists()
    marker.unlink()
    assert sys.modules["ptforget.train"]  # the loader under test


@pytest.mark.parametrize(("objective", "field", "key"), [("fkl_replay", "replay", "objective.lam"),
                                                         ("sdft", "sdft_lam", "objective.lam"),
                                                         ("ttt_discover", "lam", "objective.lam")])
def test_a_limit_names_the_key_the_user_set(objective, field, key):
    """`objective.lam=2` was reported as `objective=2.0` by ptforget-theory; the theory's fields name their keys."""
    from hydra import compose, initialize_config_module

    from ptforget.bridge import theory_fields

    with initialize_config_module("ptforget.conf", version_base="1.3"):
        cfg = compose("theory", overrides=[f"objective={objective}"])
    assert theory_fields(cfg)[1][field] == key
    if objective != "ttt_discover":  # TTT-Discover's lam has no upper bound
        with pytest.raises(ConfigError) as err:
            cli.preflight_argv([f"objective={objective}", "objective.lam=2"], "theory", validate.validate_theory)
        assert err.value.key == "objective.lam"


def test_sigterm_to_a_check_with_workers_is_one_line_without_worker_tracebacks(tmp_path):
    """SIGTERM to ``ptforget-check`` while its process pool trains: the runs in flight checkpoint, the check says
    so in one line and exits 143; no pool worker prints a traceback."""
    import signal
    import subprocess
    import time

    env = {**os.environ, "WANDB_MODE": "disabled", "PTFORGET_CACHE_DIR": str(tmp_path / "cache")}
    err = tmp_path / "err.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("ptforget-check")), "claims=[P6,P1]",
                                 "executor=processes", "executor.workers=2", f"hydra.run.dir={tmp_path / 'out'}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=fh)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:  # until the first training job has finished
            if any(" (3 seeds): complete" in line or " (5 seeds): complete" in line
                   for line in err.read_text().splitlines()):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the check ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    text = err.read_text()
    assert rc == 143 and "Traceback" not in text
    assert [line for line in text.splitlines() if line.startswith("ptforget:")] == ["ptforget: interrupted by SIGTERM"]
