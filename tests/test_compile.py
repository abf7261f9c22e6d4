"""compile=true: the same run through torch.compile completes with the same science (random draws differ)."""

from __future__ import annotations

from ptforget.train import run_training
from tests.conftest import compose_cfg


def test_compiled_updates_run_and_keep_the_old_mode(tmp_path):
    common = ("objective=rkl", "trainer.max_steps=150", "eval_every=50", "seeds=2")
    s = run_training(compose_cfg(*common, "compile=true"), tmp_path / "compiled")
    for m in s["members"]:
        assert m["status"] == "complete"
        assert abs(m["final"]["old_mass"] - 0.5) < 0.03  # reverse KL to p* keeps beta* = 0.5
        assert m["final"]["kl_q_pstar"] < 0.05
