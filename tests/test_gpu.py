"""GPU runs (marked ``gpu``; skipped without CUDA): the same configs on the device, nothing left on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from ptforget.module import PostTrainModule
from ptforget.train import run_training
from tests.conftest import compose_cfg

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CASES = [
    ("gmm", "rkl", 1), ("gmm", "fkl", 16), ("mdn", "rkl", 8), ("flow", "rkl", 4), ("gmm", "rkl_replay", 1),
    ("gmm", "sdft", 1), ("gmm", "oapl", 1), ("gmm", "ttt_discover", 1),
]


@pytest.mark.parametrize(("generator", "objective", "seeds"), CASES)
def test_runs_on_the_gpu_with_everything_on_the_device(tmp_path, generator, objective, seeds):
    seen: dict[str, set[str]] = {}
    orig = PostTrainModule.evaluate

    def spy(self, step):
        tensors = {"generator": list(self.generator.parameters()) + list(self.generator.buffers())}
        for name, value in vars(self.objective).items():
            if isinstance(value, torch.nn.Module):
                tensors[f"objective.{name}"] = list(value.parameters()) + list(value.buffers())
            elif isinstance(value, torch.Tensor):
                tensors[f"objective.{name}"] = [value]
        tensors["task"] = [self.task.mu_old, self.task.scale_tril]
        for k, ts in tensors.items():
            seen.setdefault(k, set()).update(t.device.type for t in ts)
        return orig(self, step)

    PostTrainModule.evaluate = spy
    try:
        cfg = compose_cfg(f"generator={generator}", f"objective={objective}", f"seeds={seeds}",
                          "trainer=gpu", "trainer.max_steps=100", "eval_every=50")
        s = run_training(cfg, tmp_path)
    finally:
        PostTrainModule.evaluate = orig
    assert all(types == {"cuda"} for types in seen.values()), seen
    for m in s.get("members", [s]):
        assert m["status"] == "complete"
        assert all(math.isfinite(v) for v in m["final"].values())
