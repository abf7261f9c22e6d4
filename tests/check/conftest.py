"""Shared helpers of the check's tests: a tiny profile, composed check configs and the training composer."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

#: a profile small enough for tests: 3 seeds, short runs, small flows
TINY = ["profile.seeds=3", "profile.flow_seeds=3", "profile.steps=60", "profile.flow_steps=30",
        "profile.flow_pretrain_steps=30", "profile.exact_batch=2048", "train_overrides=['eval_every=10','n_eval=512']"]


def check_config(*overrides: str):
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("check", overrides=[*TINY, *overrides])


def train_compose(overrides):
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture
def registry_guard():
    """Claims registered by a test are removed afterwards (the registry is process-global)."""
    from ptforget.check import registry

    registry.load_builtin()
    before = dict(registry.REGISTRY)
    yield registry
    registry.REGISTRY.clear()
    registry.REGISTRY.update(before)
