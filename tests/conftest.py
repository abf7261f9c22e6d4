"""Shared test set-up: W&B disabled, a per-session pretrain cache, one torch thread, and a compose helper."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("ptforget")
    os.environ.setdefault("PTFORGET_CACHE_DIR", str(root / "cache"))
    os.environ["PTFORGET_OUTPUT_DIR"] = str(root / "outputs")
    os.environ.setdefault("WANDB_DIR", str(root / "wandb"))
    os.environ.setdefault("WANDB_CACHE_DIR", str(root / "wandb-cache"))


def compose_cfg(*overrides: str):
    """Compose conf/train.yaml with overrides (no Hydra run dir, logger off, quiet)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("train", overrides=["logger=none", "quiet=true", *overrides])


@contextlib.contextmanager
def crash_at(step: int):
    """Within the block, a run's optimizer step ``step`` raises RuntimeError("simulated crash") (a crash after the
    checkpoints before it); the real step is restored afterwards."""
    from ptforget.module import PostTrainModule

    orig = PostTrainModule._optimizer_step

    def crash(self):
        if self.step == step:
            raise RuntimeError("simulated crash")
        orig(self)

    PostTrainModule._optimizer_step = crash
    try:
        yield
    finally:
        PostTrainModule._optimizer_step = orig


@pytest.fixture
def registry_guard():
    """Claims registered by a test are removed afterwards (the registry is process-global)."""
    from ptforget.check import registry

    registry.load_builtin()
    before = dict(registry.REGISTRY)
    yield registry
    registry.REGISTRY.clear()
    registry.REGISTRY.update(before)
