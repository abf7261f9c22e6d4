"""Bad input fails loudly: one stderr line naming the key, the value and what is allowed; exit 2; nothing written.

Most cases run the command-line pre-flight in-process (``ptforget.cli.preflight_argv``: Hydra's compose API, then
``ptforget.validate.preflight``), so they are fast. A few run the real ``ptforget-train`` script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptforget import cli, validate
from ptforget.errors import ConfigError

GROUPS = "one of 'flow', 'gmm', 'mdn', 'realnvp'"

# (command line, key named, value as printed)
TRAIN_CASES = [
    # Hydra level: unknown group option, unknown key, malformed override, sweep without -m, wrong config name
    ("generator=foo", "generator", "'foo'"),
    ("trainer=foo", "trainer", "'foo'"),
    ("logger=foo", "logger", "'foo'"),  # unknown logger kind (the group)
    ("experiment=foo", "experiment", "'foo'"),
    ("task.foo=1", "task.foo", "1"),
    ("foo=1", "foo", "1"),
    ("objective.foo.bar=1", "objective.foo.bar", "1"),
    ("+task.foo=1", "task.foo", "1"),  # added, but not an argument of the task's constructor
    ("~foo", "override", "'~foo'"),
    ("a=b=c", "override", "'a=b=c'"),
    ("seed", "override", "'seed'"),
    ("seed=0,1", "seed", "'0,1'"),
    ("--config-name nope", "--config-name", "'nope'"),
    # wrong types
    ("trainer.max_steps=abc", "trainer.max_steps", "'abc'"),
    ("task.delta=abc", "task.delta", "'abc'"),
    ("task.dim=2.5", "task.dim", "2.5"),
    ("task.delta='4'", "task.delta", "'4'"),  # a string that looks like a number
    ("generator=flow generator.hidden=[a,b]", "generator.hidden", "['a', 'b']"),
    ("generator=flow generator.pretrain.steps=abc", "generator.pretrain.steps", "'abc'"),
    ("task.delta=${oops}", "task.delta", "'${oops}'"),
    # out of range
    ("task.beta_star=1.0", "task.beta_star", "1.0"),
    ("task.beta_star=1.5", "task.beta_star", "1.5"),
    ("task.beta_star=0", "task.beta_star", "0"),
    ("task.beta_star=-0.5", "task.beta_star", "-0.5"),
    ("objective=fkl_replay objective.lam=1.0", "objective.lam", "1.0"),
    ("objective=rkl_replay objective.lam=-0.1", "objective.lam", "-0.1"),
    ("task.delta=-1", "task.delta", "-1"),
    ("task.dim=0", "task.dim", "0"),
    ("objective.batch=0", "objective.batch", "0"),
    ("objective=ttt_discover objective.group_size=1", "objective.group_size", "1"),  # leave-one-out needs K >= 2
    ("objective=oapl objective.lag=0", "objective.lag", "0"),
    ("seed=-1", "seed", "-1"),
    ("seeds=0", "seeds", "0"),
    ("checkpoint_every=-1", "checkpoint_every", "-1"),
    ("eval_every=0", "eval_every", "0"),
    ("n_eval=8", "n_eval", "8"),
    ("optimizer.lr=-0.1", "optimizer.lr", "-0.1"),
    ("optimizer=sgd optimizer.lr=0", "optimizer.lr", "0"),
    ("optimizer.betas=[1.5,0.9]", "optimizer.betas", "[1.5, 0.9]"),
    # NaN / inf
    ("task.delta=nan", "task.delta", "nan"),
    ("optimizer.lr=nan", "optimizer.lr", "nan"),
    ("task.beta_star=inf", "task.beta_star", "inf"),
    # unknown names
    ("optimizer.name=rmsprop", "optimizer.name", "'rmsprop'"),
    ("logger.kind=foo", "logger.kind", "'foo'"),
    ("trainer.accelerator=foo", "trainer.accelerator", "'foo'"),
    ("+trainer.foo=1", "trainer.foo", "1"),
    ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches", "2"),
    ("+trainer.gradient_clip_val=1 +trainer.gradient_clip_algorithm=foo", "trainer.gradient_clip_algorithm", "'foo'"),
    ("+trainer.gradient_clip_val=-1", "trainer.gradient_clip_val", "-1"),
    # combinations the generator family or the task rules out
    ("objective=rkl objective.estimator=pathwise generator=gmm", "objective.estimator", "'pathwise'"),
    ("objective=rkl objective.estimator=pathwise generator=mdn", "objective.estimator", "'pathwise'"),
    ("objective=sdft objective.teacher=icl generator=flow", "objective.teacher", "'icl'"),
    ("generator=realnvp task.dim=1", "generator.kind", "'realnvp'"),
    ("task.covariance=[[1,0,0],[0,1,0],[0,0,1]]", "task.covariance", "[[1, 0, 0], [0, 1, 0], [0, 0, 1]]"),
    ("task.dim=1 task.new_shift=1.0", "task.new_shift", "1.0"),
    # output directory
    ("paths.output_dir={file}/x", "paths.output_dir", "/x'"),
    # multirun: every sweep value is checked
    ("-m seed=0,1 generator=gmm,foo", "generator", "'foo'"),
    ("-m task.beta_star=0.5,1.5", "task.beta_star", "1.5"),
    ("-m objective=fkl,rkl objective.estimator=pathwise", "objective.estimator", "'pathwise'"),
    ("-m experiment=replay_sweep objective.lam=0.5,1.5", "objective.lam", "1.5"),  # with the experiment's sweeps
    ("-m objective.lag=interval(0,1)", "objective.lag", "'interval(0,1)'"),
    # issue 13: wrong types, unknown keys, tracebacks that preflight missed, degenerate values, paths
    ("optimizer.lr=true", "optimizer.lr", "True"),
    ("trainer.deterministic=maybe", "trainer.deterministic", "'maybe'"),
    ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps", "-1"),
    ("+nosuchkey=3", "nosuchkey", "3"),  # would change nothing but config_hash
    ("+optimizer.foo=1", "optimizer.foo", "1"),
    ("seed=99999999999999999999", "seed", "99999999999999999999"),
    ("seeds=3 seed=9223372036854775806", "seed", "9223372036854775806"),
    ("trainer.devices=0", "trainer.devices", "0"),
    ("-m generator=flow,realnvp generator.pretrain.steps=200", "generator.pretrain.steps", "200"),
    ("hydra/launcher=nosuch", "hydra/launcher", "'nosuch'"),
    ("-m hydra/launcher=joblib hydra.launcher.n_jobs=abc seed=1,2", "hydra.launcher.n_jobs", "'abc'"),
    ("-m seed=range(0,3,0)", "seed", "'range(0,3,0)'"),
    ("-m seed=0,1 hydra.sweep.subdir=../x", "hydra.sweep.subdir", "'../x'"),
    ("task.covariance=[[1,0],[0]]", "task.covariance", "[[1, 0], [0]]"),  # named, not the whole task dict
    ("task.sigma=1e-300", "task.sigma", "1e-300"),
    ("generator=flow generator.bins=0", "generator.bins", "0"),
    ("generator.lr_mult.old=abc", "generator.lr_mult.old", "'abc'"),
    ("generator.components=1000", "generator.components", "1000"),  # not generator.weight_clip
    ("task.beta_star=1e-300", "task.beta_star", "1e-300"),
    ("optimizer.lr=1e9", "optimizer.lr", "1000000000.0"),  # Adam: complete with KL 1e16 otherwise
    ("study=../../escaped", "study", "'../../escaped'"),
    ("study=a/b", "study", "'a/b'"),
    ("hydra.run.dir=", "hydra.run.dir", "''"),
    ("limits.memory_gb=-1", "limits.memory_gb", "-1"),
    # resources, through preflight only (a fixed limit, so the cases do not depend on this machine's memory)
    ("limits.memory_gb=8 objective.batch=100000000", "objective.batch", "100000000"),
    ("limits.memory_gb=8 n_eval=1000000000", "n_eval", "1000000000"),
    ("limits.memory_gb=8 objective=ttt_discover objective.groups=100000 objective.group_size=100000",
     "objective.groups", "100000"),
    ("limits.memory_gb=8 objective=rkl_replay objective.buffer=10000000000", "objective.buffer", "10000000000"),
    ("limits.memory_gb=8 generator=mdn generator.components=100000", "generator.components", "100000"),
    ("limits.memory_gb=8 generator.components=1000000", "generator.components", "1000000"),
    ("limits.memory_gb=8 task.dim=100000", "task.dim", "100000"),
    ("limits.memory_gb=8 trainer.max_steps=100000000000 eval_every=1", "trainer.max_steps", "100000000000"),
    ("-m limits.memory_gb=8 seed=0,1 task.dim=2,100000", "task.dim", "100000"),  # a sweep value, checked once
]


def _argv(line: str, tmp_path: Path) -> list[str]:
    if "{file}" in line:
        blocker = tmp_path / "a_file"
        blocker.write_text("not a directory")
        line = line.replace("{file}", str(blocker))
    return line.split()


@pytest.mark.parametrize(("line", "key", "value"), TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_command_line_is_refused_naming_key_and_value(line, key, value, tmp_path):
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(_argv(line, tmp_path), "train", validate.preflight)
    msg = str(err.value)
    assert err.value.key == key, msg
    assert f"{key}=" in msg and value in msg and "; allowed: " in msg, msg
    assert "\n" not in " ".join(msg.split()), msg


def test_unknown_group_option_lists_the_options():
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(["generator=foo"], "train", validate.preflight)
    assert str(err.value) == f"invalid config: generator='foo'; allowed: {GROUPS}"


def test_unknown_key_lists_the_keys_of_its_node():
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(["task.foo=1"], "train", validate.preflight)
    assert "'beta_star'" in err.value.allowed and "'delta'" in err.value.allowed


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_output_dir_that_cannot_be_created():
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(["paths.output_dir=/proc/forbidden/x"], "train", validate.preflight)
    assert err.value.key == "paths.output_dir" and "/proc/forbidden/x" in str(err.value)


OTHER_CASES = [
    ("theory", "generator=foo", "generator", "'foo'"),
    ("theory", "task.foo=1", "task.foo", "1"),
    ("theory", "task.delta=nan", "task.delta", "nan"),
    ("theory", "task.beta_star=1.5", "task.beta_star", "1.5"),
    ("check", "profile=foo", "profile", "'foo'"),
    ("check", "claims=[P99]", "claims", "'P99'"),
    ("check", "profile.seeds=0", "profile.seeds", "0"),
    # issue 13
    ("theory", "optimizer.lr=10", "optimizer.lr", "10.0"),  # filled 8 GiB in 31 s
    ("theory", "task.delta=1e6", "task.delta", "1000000.0"),
    ("theory", "limits.memory_gb=8 trainer.max_steps=100000000", "trainer.max_steps", "100000000"),
    ("theory", "limits.memory_gb=8 task.dim=100000", "task.dim", "100000"),
    ("theory", "+theory.kappa=-1", "theory.kappa", "-1"),
    ("theory", "+theory.beta_star_grid=[1e-6,0.5]", "theory.beta_star_grid", "[1e-06, 0.5]"),
    ("theory", "+theory.delta_grid=[1,1e6]", "theory.delta_grid", "[1, 1000000.0]"),
    ("theory", "+nosuchkey=3", "nosuchkey", "3"),
    ("check", "reuse=maybe", "reuse", "'maybe'"),
    ("check", "strict=maybe", "strict", "'maybe'"),
    ("check", "generators=[]", "generators", "[]"),
    ("check", "claims=[]", "claims", "[]"),
    ("check", "generators=[nosuch]", "generators.0", "'nosuch'"),
    ("check", "train_overrides=['foo=1']", "train_overrides", "foo=1"),
    ("check", "train_overrides=['task.delta=-1']", "train_overrides.0", "task.delta=-1"),  # a claim's own key
    ("check", "profile.deltas=[-1.0]", "profile.deltas", "[-1.0]"),  # the profile key, not task.delta
    ("check", "profile.batch_sizes=[0]", "profile.batch_sizes", "[0]"),
    ("check", "profile.replay_lambdas=[1.0]", "profile.replay_lambdas", "[1.0]"),
    ("check", "profile.rate_betas=[1.0]", "profile.rate_betas", "[1.0]"),
    ("check", "profile.starvation_batches=[0]", "profile.starvation_batches", "[0]"),
    ("check", "+profile.rate_max_steps=0", "profile.rate_max_steps", "0"),
    ("check", "+nosuchkey=3", "nosuchkey", "3"),
]


@pytest.mark.parametrize(("entry", "line", "key", "value"), OTHER_CASES, ids=[f"{c[0]}:{c[1]}" for c in OTHER_CASES])
def test_theory_and_check_command_lines_are_refused(entry, line, key, value):
    validator = {"theory": validate.validate_theory, "check": validate.validate_check}[entry]
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(line.split(), entry, validator)
    assert err.value.key == key and value in str(err.value)


def test_a_slurm_check_needs_sbatch_and_checks_the_devices_on_its_nodes(monkeypatch):
    """Without sbatch the SLURM executor is refused by name; with it, trainer=gpu from a login node without a GPU
    is accepted (the jobs' devices are the nodes')."""
    line = ["executor=submitit_slurm", "train_overrides=['trainer=gpu']", "claims=[P1]"]
    monkeypatch.setattr(validate.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(line, "check", validate.validate_check)
    assert err.value.key == "executor" and "sbatch" in str(err.value)
    monkeypatch.setattr(validate.shutil, "which", lambda name: f"/usr/bin/{name}")
    cli.preflight_argv(line, "check", validate.validate_check)


@pytest.mark.parametrize(("main", "line"), [(cli.train_main, "task.beta_star=2"), (cli.train_main, "generator=foo"),
                                            (cli.theory_main, "task.foo=1"), (cli.check_main, "profile=foo"),
                                            (cli.train_main, "+nosuchkey=3"), (cli.check_main, "reuse=maybe"),
                                            (cli.theory_main, "optimizer.lr=10")])
def test_entry_points_print_one_line_and_exit_2(main, line, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PTFORGET_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setattr(sys, "argv", ["ptforget", *line.split()])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ptforget: error: invalid config: "), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this host has a GPU")
def test_a_gpu_run_on_a_cpu_host_is_refused_but_a_slurm_launch_is_not():
    with pytest.raises(ConfigError) as err:
        cli.preflight_argv(["trainer=gpu"], "train", validate.preflight)
    assert err.value.key == "trainer.accelerator" and "no CUDA device" in str(err.value)
    line = "-m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu trainer=gpu seed=0,1"
    assert cli.preflight_argv(line.split(), "train", validate.preflight) == 2


def test_the_memory_limit_is_a_config_key():
    line = "limits.memory_gb=8 objective.batch=100000000"
    with pytest.raises(ConfigError, match="limits.memory_gb=8 GB"):
        cli.preflight_argv(line.split(), "train", validate.preflight)
    assert cli.preflight_argv(["limits.memory_gb=100000", "objective.batch=100000000"], "train",
                              validate.preflight) == 1


# ---------------------------------------------------------------------------------------------- good input passes
@pytest.mark.parametrize(("line", "n_configs"), [
    ("", 1),
    ("--help", 0),  # Hydra's own flags are not checked
    ("--cfg job generator=foo", 0),
    ("hydra.run.dir=somewhere hydra/job_logging=disabled", 1),  # hydra overrides pass through
    ("objective=oapl objective.lag=inf", 1),  # inf is allowed where it means something
    ("-m seed=0,1,2 objective=fkl,rkl", 4),  # linear: base + 2 more seeds + 1 more objective
    ("-m seed=range(0,3)", 3),
    ("-m experiment=replay_sweep", 8),  # the experiment's own sweep: 1 + 1 objective + 4 lambdas + 2 seeds
    # a SLURM sweep for GPU nodes, launched from a host without a GPU: devices are checked where jobs run
    ("-m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu trainer=gpu seed=0,1", 2),
    ("+trainer.gradient_clip_val=0.5 seeds=4", 1),
])
def test_good_command_lines_pass(line, n_configs):
    assert cli.preflight_argv(line.split(), "train", validate.preflight) == n_configs


# ---------------------------------------------------------------------------------------------- real processes
SCRIPT = Path(sys.executable).with_name("ptforget-train")

SUBPROCESS_CASES = [
    (["generator=foo"], "generator='foo'"),
    (["task.foo=1"], "task.foo=1"),
    (["task.beta_star=1.5"], "task.beta_star=1.5"),
    (["objective=rkl", "objective.estimator=pathwise", "generator=mdn"], "objective.estimator='pathwise'"),
    (["-m", "seed=0,1", "generator=gmm,foo"], "generator='foo'"),
]


@pytest.mark.skipif(not SCRIPT.exists(), reason="ptforget-train is not installed next to the interpreter")
@pytest.mark.parametrize(("args", "expected"), SUBPROCESS_CASES, ids=[" ".join(a) for a, _ in SUBPROCESS_CASES])
def test_ptforget_train_exits_2_with_one_line_and_writes_nothing(args, expected, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    env = {**os.environ, "PTFORGET_OUTPUT_DIR": str(out), "PTFORGET_CACHE_DIR": str(cache), "WANDB_MODE": "disabled"}
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ptforget: error: invalid config: ") and expected in lines[0], lines
    assert list(out.rglob("*")) == []  # no run dir, no .hydra, no summary
    assert not cache.exists() or list(cache.rglob("*")) == []
    assert {p.name for p in tmp_path.iterdir()} <= {"out", "cache"}  # nothing in the working directory either


@pytest.mark.skipif(not SCRIPT.exists(), reason="ptforget-train is not installed next to the interpreter")
def test_ptforget_train_help_still_works(tmp_path):
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PTFORGET_OUTPUT_DIR": str(tmp_path / "out")})
    assert proc.returncode == 0, proc.stderr
    assert "generator" in proc.stdout
    assert not (tmp_path / "out").exists()
