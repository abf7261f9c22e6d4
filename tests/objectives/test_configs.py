"""Config files compose and build; bad values and combinations raise ConfigError naming the key; flow/MDN smoke."""

from __future__ import annotations

import csv

import pytest
from hydra.utils import instantiate

from ptforget.errors import ConfigError
from ptforget.objectives import OAPL, SDFT, ForwardKLReplay, ReverseKLReplay, TTTDiscover
from ptforget.train import run_training
from tests.conftest import compose_cfg

OBJECTIVES = {"fkl_replay": ForwardKLReplay, "rkl_replay": ReverseKLReplay, "sdft": SDFT,
              "ttt_discover": TTTDiscover, "oapl": OAPL}
SMALL_FLOW = ("generator=flow", "generator.pretrain.steps=50", "generator.transforms=2", "generator.hidden=[16,16]",
              "generator.pretrain.batch=128")


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_config_instantiates_with_its_defaults(name):
    cfg = compose_cfg(f"objective={name}")
    obj = instantiate(cfg.objective, _convert_="all")
    assert isinstance(obj, OBJECTIVES[name]) and obj.name == name


BAD = [
    (("objective=fkl_replay", "objective.lam=1.0"), "objective.lam"),
    (("objective=rkl_replay", "objective.lam=-0.1"), "objective.lam"),
    (("objective=rkl_replay", "objective.estimator=pathwise"), "objective.estimator"),
    (("objective=rkl_replay", "objective.source=p_new"), "objective.source"),
    (("objective=rkl_replay", "objective.mode=fixed_slots", "objective.batch=4", "objective.lam=0.9"),
     "objective.lam"),
    (("objective=fkl_replay", "objective.buffer=0"), "objective.buffer"),
    (("objective=sdft", "objective.alpha_ema=0"), "objective.alpha_ema"),
    (("objective=sdft", "objective.alpha_ema=1.5"), "objective.alpha_ema"),
    (("objective=sdft", "objective.lam=1.5"), "objective.lam"),
    (("objective=sdft", "objective.estimator=pathwise"), "objective.estimator"),  # GMM has no pathwise sampler
    (("objective=sdft", "objective.direction=forward", "objective.estimator=score"), "objective.estimator"),
    (("objective=sdft", "objective.direction=sideways"), "objective.direction"),
    (("objective=sdft", "objective.kappa=0"), "objective.kappa"),
    (("objective=ttt_discover", "objective.group_size=1"), "objective.group_size"),
    (("objective=ttt_discover", "objective.groups=0"), "objective.groups"),
    (("objective=ttt_discover", "objective.beta=-1"), "objective.beta"),
    (("objective=ttt_discover", "objective.lam=-0.5"), "objective.lam"),
    (("objective=ttt_discover", "objective.reward=money"), "objective.reward"),
    (("objective=ttt_discover", "+objective.reuse.bogus=1"), "objective.reuse"),
    (("objective=ttt_discover", "objective.reuse.enabled=true", "objective.reuse.groups=9"), "objective.reuse.groups"),
    (("objective=oapl", "objective.group_size=0"), "objective.group_size"),
    (("objective=oapl", "objective.groups=0"), "objective.groups"),
    (("objective=oapl", "objective.lag=0"), "objective.lag"),
    (("objective=oapl", "objective.beta1=0"), "objective.beta1"),
    (("objective=oapl", "objective.beta2=-1"), "objective.beta2"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[" ".join(o[1:]) or o[0] for o, _ in BAD])
def test_bad_values_raise_config_error_naming_the_key(tmp_path, overrides, key):
    cfg = compose_cfg(*overrides, "trainer.max_steps=1")
    with pytest.raises(ConfigError) as err:
        run_training(cfg, tmp_path)
    assert err.value.key == key
    assert key in str(err.value) and "allowed" in str(err.value)


@pytest.mark.parametrize("overrides,key", [
    (("objective=sdft", "objective.teacher=icl"), "objective.teacher"),  # icl needs mixture components
    (("objective=sdft", "objective.estimator=enumerate"), "objective.estimator"),  # flows have no components
])
def test_family_dependent_errors_on_a_flow(tmp_path, overrides, key):
    cfg = compose_cfg(*SMALL_FLOW, *overrides, "trainer.max_steps=1")
    with pytest.raises(ConfigError) as err:
        run_training(cfg, tmp_path)
    assert err.value.key == key and "Flow" in str(err.value)


FLOW_SMOKE = [
    ("objective=sdft",),  # reverse, pathwise
    ("objective=sdft", "objective.direction=forward", "objective.anchor=new"),
    ("objective=sdft", "objective.estimator=score"),
    ("objective=oapl", "objective.lag=2"),
    ("objective=ttt_discover", "objective.lam=0.1", "objective.group_size=8"),
    ("objective=rkl_replay", "objective.source=q0", "objective.buffer=64"),
    ("objective=fkl_replay", "objective.source=q0", "objective.mode=fixed_slots"),
]


@pytest.mark.parametrize("overrides", FLOW_SMOKE, ids=[" ".join(o) for o in FLOW_SMOKE])
def test_flow_smoke(tmp_path, overrides):
    s = run_training(compose_cfg(*SMALL_FLOW, *overrides, "objective.batch=32" if "oapl" not in overrides[0]
                                 and "ttt" not in overrides[0] else "seed=0", "trainer.max_steps=4",
                                 "eval_every=2", "n_eval=64"), tmp_path)
    assert s["status"] == "complete" and s["steps"] == 4


@pytest.mark.parametrize("overrides", [("objective=sdft", "objective.teacher=icl"),
                                       ("objective=sdft", "objective.teacher=icl", "objective.direction=forward"),
                                       ("objective=rkl_replay",), ("objective=oapl",)])
def test_mdn_smoke(tmp_path, overrides):
    s = run_training(compose_cfg("generator=mdn", "generator.pretrain.steps=50", *overrides, "trainer.max_steps=4",
                                 "eval_every=2", "n_eval=64"), tmp_path)
    assert s["status"] == "complete"


def test_ttt_discover_state_reuse_runs_and_improves_the_archive(tmp_path):
    s = run_training(compose_cfg("generator=gmm", "objective=ttt_discover", "objective.reuse.enabled=true",
                                 "objective.groups=3", "objective.group_size=16", "objective.reuse.seed_states=8",
                                 "trainer.max_steps=40", "eval_every=20"), tmp_path)
    assert s["status"] == "complete"
    with open(tmp_path / "trajectory.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["obj_archive_best"]) > 0.9  # the archive climbs to the new-mode peak (reward max 1)
