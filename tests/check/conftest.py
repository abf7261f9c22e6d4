"""Shared helpers of the check's tests: a tiny profile, composed check configs and the training composer."""

from __future__ import annotations

from hydra import compose, initialize_config_module

#: a profile small enough for tests: 3 seeds, short runs, small flows
TINY = ["profile.families.gmm.seeds=3", "profile.families.mdn.seeds=3", "profile.families.flow.seeds=3",
        "profile.families.gmm.steps=60", "profile.families.mdn.steps=60", "profile.families.flow.steps=30",
        "profile.families.flow.overrides=['generator.pretrain.steps=30']", "profile.exact_batch=2048",
        "profile.eval_every=10"]


def check_config(*overrides: str):
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("check", overrides=[*TINY, *overrides])


def train_compose(overrides):
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))
