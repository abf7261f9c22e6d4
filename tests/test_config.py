"""Every config composes and instantiates; bad input fails with one clear line and a non-zero exit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError

from ptforget.build import build, optimizer_config
from ptforget.errors import ConfigError
from tests.conftest import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("generator", options("generator"))
def test_every_generator_config_instantiates(generator):
    cfg = compose_cfg(f"generator={generator}", "task.dim=2", *(
        ["generator.pretrain.steps=2"] if generator not in ("gmm",) else []))
    task, gen, obj = build(cfg)
    assert gen.log_prob(gen.sample(4)).shape == (4,)
    assert optimizer_config(cfg)["lr"] > 0


@pytest.mark.parametrize("objective", options("objective"))
def test_every_objective_config_instantiates(objective):
    cfg = compose_cfg(f"objective={objective}")
    task, gen, obj = build(cfg)
    obj.validate(gen, task)
    obj.setup(gen, task)
    loss, logs = obj.loss(gen, 0)
    assert loss.ndim == 0


@pytest.mark.parametrize("group", ["task", "optimizer", "trainer", "logger", "paths"])
def test_every_other_group_option_composes(group):
    for opt in options(group):
        cfg = compose_cfg(f"{group}={opt}")
        assert group in cfg


def test_unknown_group_option_and_unknown_key_are_refused():
    with pytest.raises(ConfigCompositionException, match="generator"):
        compose_cfg("generator=gan")
    with pytest.raises((ConfigCompositionException, ConfigAttributeError)):
        compose_cfg("task.deltaa=3")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("task.beta_star=1.0", "task.beta_star"),
        ("task.delta=-1", "task.delta"),
        ("task.dim=0", "task.dim"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("objective.batch=0", "objective.batch"),
        ("generator.weight=softmax", "generator.weight"),
        ("objective.estimator=pathwise", "objective.estimator"),
    ],
)
def test_bad_values_raise_config_error(override, key, tmp_path):
    from ptforget.train import run_training

    cfg = compose_cfg(override, "trainer.max_steps=2")
    with pytest.raises(ConfigError) as err:
        run_training(cfg, tmp_path)
    assert err.value.key == key
    assert not any(tmp_path.iterdir())  # nothing partial written


def test_cli_bad_value_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "PTFORGET_OUTPUT_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "ptforget.cli", "task.beta_star=1.5"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    expected = ("ptforget: error: invalid config: task.beta_star=1.5; allowed: a number in the open interval (0, 1), "
                "at least 1e-06 from 0 and 1 (float32 training)")
    assert lines == [expected]
    assert not list(tmp_path.rglob("summary.json"))


def test_wandb_logger_runs_without_network(tmp_path):
    """logger=wandb (offline by default; disabled in tests) completes and still writes the run files."""
    from ptforget.train import run_training

    cfg = compose_cfg("logger=wandb", "trainer.max_steps=20", "eval_every=10")
    summary = run_training(cfg, tmp_path)
    assert summary["status"] == "complete"
    assert (tmp_path / "trajectory.csv").exists() and (tmp_path / "summary.json").exists()
