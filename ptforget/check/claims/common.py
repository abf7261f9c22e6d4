"""Helpers the claim modules share: standard run specs and the GMM a run had at a recorded step."""

from __future__ import annotations

import math

import numpy as np
import torch

from ptforget.check.context import Context
from ptforget.check.runs import Run, RunSpec

#: the default task of the per-family claims: 2-D, Delta = 6, beta* = 0.5
T6 = ("task.dim=2", "task.delta=6", "task.beta_star=0.5")


def exact_spec(ctx: Context, label: str, delta: float, beta_star: float, h: float, steps: int, eval_every: int,
               *extra: str, batch: int | None = None) -> RunSpec:
    """A 1-D GMM reverse-KL run with plain SGD and a large enumerated batch: follows the exact population flow."""
    return RunSpec(label, "gmm", (
        "objective=rkl", "objective.estimator=enumerate", "optimizer=sgd", f"optimizer.lr={h}", "task.dim=1",
        f"task.delta={delta}", f"task.beta_star={beta_star}", "task.new_offset=1", f"trainer.max_steps={steps}",
        f"objective.batch={int(batch or ctx.profile.exact_batch)}", f"eval_every={eval_every}", *extra))


def gmm_at(run: Run, delta: float, beta_star: float, row: int = -1):
    """The 1-D GMM and task a run had at trajectory row ``row`` (its weight and component means are recorded)."""
    from ptforget.generators import GaussianMixture
    from ptforget.tasks import TwoModeTask

    task = TwoModeTask(dim=1, delta=delta, beta_star=beta_star)
    gen = GaussianMixture(task)
    w = float(np.clip(run.col("weight")[row], 1e-12, 1 - 1e-12))
    with torch.no_grad():
        gen.weight_param.fill_(math.log(w / (1 - w)))
        gen.mu_old.fill_(float(run.col("mu_old_0")[row]))
        gen.mu_rest.fill_(float(run.col("mu_new_0")[row]))
    return gen, task
