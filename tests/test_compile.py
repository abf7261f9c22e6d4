"""compile=true: the fused step (``ptforget.fused``) applies exactly the eager update (gradient, per-member clipping,
Adam / SGD), and a compiled run keeps the science, resumes bit-identically and reuses its compiled code."""

from __future__ import annotations

import pytest
import torch

from ptforget.ensemble import batched
from ptforget.fused import FusedStep
from ptforget.generators import GaussianMixture
from ptforget.objectives.base import Objective
from ptforget.tasks import TwoModeTask
from ptforget.train import run_training
from tests.conftest import compose_cfg, crash_at


class _FixedData(Objective):
    """Negative log-likelihood of fixed per-member data: no random draws, so compiled and eager must agree."""

    batchable = True

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__(x.shape[-2])
        self.x = x

    def loss(self, generator, step):
        nll = -generator.log_prob(self.x).mean(-1)
        return nll * torch.tensor([1.0, 30.0, 0.01]), {"nll": nll.detach()}  # different gradient scales per member


@pytest.mark.parametrize("optimizer", ["adam", pytest.param("sgd", marks=pytest.mark.slow)])
def test_fused_step_applies_the_eager_update(optimizer):
    """Three steps of the fused step and of loss.backward() + torch.optim on identical members and data: the same
    parameters, optimizer state and per-member clipping (member 1 is clipped, the others are not)."""
    torch.manual_seed(0)
    task = TwoModeTask(dim=2, delta=4.0)
    x = task.sample("new", 64, (3,))
    a, b = (batched(GaussianMixture(task, covariance="diag"), 3) for _ in range(2))
    obj = _FixedData(x)
    obj.setup(a, task)

    def make(gen):
        groups = gen.param_groups(0.05)
        if optimizer == "adam":
            return torch.optim.Adam(groups, weight_decay=0.01)
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=0.01)

    opt_a, opt_b = make(a), make(b)
    clip = 0.5
    fused = FusedStep(b, obj, opt_b, (clip, "norm"), [p.detach().clone() for p in b.parameters()])
    bad, pbad = torch.full((3,), -1), torch.full((3,), -1)
    for step in range(3):
        losses, _ = obj.loss(a, step)
        opt_a.zero_grad()
        losses.sum().backward()
        grads = [p.grad for p in a.parameters()]
        norm = torch.stack([g.reshape(3, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        assert norm[1] > clip > norm[2]
        for g in grads:
            g.mul_((clip / (norm + 1e-6)).clamp(max=1.0).view(-1, *([1] * (g.dim() - 1))))
        opt_a.step()
        fused_losses, _, bad, pbad = fused(step, bad, pbad)
        assert torch.allclose(fused_losses, losses.detach(), rtol=1e-5, atol=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-6)
        for key, va in opt_a.state[pa].items():
            assert torch.allclose(va.float(), opt_b.state[pb][key].float(), rtol=1e-5, atol=1e-7), key
    assert bad.tolist() == pbad.tolist() == [-1, -1, -1]


COMMON = ("objective=rkl", "seeds=2", "compile=true")


def test_a_compiled_run_resumes_bit_identically_and_reuses_its_compilation(tmp_path):
    """A compiled run keeps the science (reverse KL to p* keeps beta* = 0.5). Crash it after the step-100
    checkpoint; the resumed run ends byte-identical to the unbroken one (the compiled step draws from torch's
    generator, restored with the checkpoint). The three runs compile at most once between them (same shapes and
    settings: a step graph and an evaluation graph)."""
    import torch._dynamo.utils as dynamo_utils

    cfg = compose_cfg(*COMMON, "trainer.max_steps=160", "eval_every=25", "checkpoint_every=50")
    frames0 = dynamo_utils.counters["stats"]["unique_graphs"]
    ref = run_training(cfg, tmp_path / "ref")
    for m in ref["members"]:
        assert m["status"] == "complete"
        assert abs(m["final"]["old_mass"] - 0.5) < 0.03
        assert m["final"]["kl_q_pstar"] < 0.05
    with crash_at(130), pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, tmp_path / "run")
    resumed = run_training(cfg, tmp_path / "run")
    assert all(m["resumed_from_step"] == 100 for m in resumed["members"])
    for k in (0, 1):
        ref = (tmp_path / "ref" / f"seed{k}" / "trajectory.csv").read_bytes()
        assert (tmp_path / "run" / f"seed{k}" / "trajectory.csv").read_bytes() == ref
    assert dynamo_utils.counters["stats"]["unique_graphs"] - frames0 <= 2


FAMILIES = ("gmm", "mdn", "flow", "realnvp")
OBJECTIVES = ("rkl", "fkl", "rkl_replay", "fkl_replay", "sdft", "ttt_discover", "oapl")


@pytest.fixture
def traced_only():
    """Capture steps with dynamo's eager backend (the trace, without inductor's code generation: seconds, not
    minutes); the process's real compiled step is rebuilt afterwards."""
    from ptforget import fused

    fused.use_backend("cpu", "eager")
    yield
    fused._COMPILED.pop("cpu", None)
    fused._UNAVAILABLE.clear()


def _compiled_run(caplog, family: str, objective: str, tmp_path) -> list[str]:
    """A 4-step seeds=2 compile=true run; the warnings that say its step ran eagerly."""
    import logging

    overrides = [f"generator={family}", f"objective={objective}", "seeds=2", "compile=true", "trainer.max_steps=4",
                 "eval_every=2", "n_eval=256", "checkpoint_every=0"]
    if family != "gmm":
        overrides.append("generator.pretrain.steps=0")
    if family == "flow":
        overrides.append("task.dim=1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptforget"):
        summary = run_training(compose_cfg(*overrides), tmp_path / f"{family}-{objective}")
    assert [m["status"] for m in summary["members"]] == ["complete", "complete"]
    return [r.getMessage() for r in caplog.records if "compile=true" in r.getMessage()]


def test_the_flow_step_is_captured_as_one_graph(traced_only, caplog, tmp_path):
    """The native flow path (flow_native) traces as one graph: no 'runs eagerly' fallback for the flow's reverse KL."""
    assert _compiled_run(caplog, "flow", "rkl", tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_objective_of_every_family_is_captured(traced_only, caplog, tmp_path, family):
    """compile=true captures the step of every family x objective (none runs eagerly); scripts/compile_matrix.py
    prints the same table (with --backend inductor, with the real compilation)."""
    failed = {obj: _compiled_run(caplog, family, obj, tmp_path) for obj in OBJECTIVES}
    assert {obj: msgs for obj, msgs in failed.items() if msgs} == {}
