"""Objective interface and the estimator helpers every loss shares.

An objective samples what it needs inside ``loss`` (on-policy from the generator, off-policy from the task or a
replay source, from frozen copies it owns) and returns (loss, logs). Logs are tensors: nothing here syncs with
the host.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import Tensor

from ptforget.errors import check, check_choice
from ptforget.generators.base import Generator
from ptforget.tasks import TwoModeTask


class Objective:
    """Base class. ``setup`` is called once with the generator and task before training."""

    name: str = "objective"
    #: estimators this objective accepts; subclasses narrow it
    estimators: tuple[str, ...] = ()
    #: the loss accepts a generator with batched members (a leading member dimension, see
    #: ``ptforget.generators.base``) and returns one loss per member, keeping any per-run state per member;
    #: objectives without it run their seeds one after another
    batchable: bool = False
    #: the config key of each TheoryConfig field ``theory_fields`` sets (a refused field names it), e.g.
    #: ``{"replay": "objective.lam"}``; a field not listed is blamed on ``objective``
    theory_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, batch: int = 256) -> None:
        check(isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1, "objective.batch", batch,
              "an integer >= 1")
        self.batch = batch
        self.task: TwoModeTask | None = None

    @classmethod
    def theory_fields(cls, spec: dict[str, Any], steps: int) -> dict[str, Any]:
        """The TheoryConfig fields this objective's config sets (``spec``: its resolved config group; ``steps``:
        the run's optimizer steps). The bridge to ``ptforget.theory`` asks the objective, never its name."""
        return {}

    def validate(self, generator: Generator, task: TwoModeTask) -> None:
        """Check the objective against the generator family and task before anything runs."""

    def setup(self, generator: Generator, task: TwoModeTask) -> None:
        """Bind the task and build what the objective owns (frozen copies) on the generator's device."""
        self.task = task

    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def on_step_end(self, generator: Generator, step: int) -> None:
        """Called after every optimizer step (EMA / lag syncs)."""

    def state_dict(self) -> dict[str, Any]:
        """Objective state to checkpoint (frozen copies, buffers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def resolve_estimator(estimator: str, generator: Generator, allowed: tuple[str, ...], key: str) -> str:
    """Check an estimator name against the objective and the generator family; ``auto`` picks the best one."""
    check_choice(estimator, key, ("auto", *allowed))
    if estimator == "auto":
        if generator.has_components and "enumerate" in allowed:
            return "enumerate"
        if generator.supports_pathwise and "pathwise" in allowed:
            return "pathwise"
        return "score"
    family = type(generator).__name__
    check(estimator != "pathwise" or generator.supports_pathwise, key, estimator,
          f"'enumerate' or 'score' for {family} (no whole-model reparameterised sampler)")
    check(estimator != "enumerate" or generator.has_components, key, estimator,
          f"'pathwise' or 'score' for {family} (no mixture components to enumerate)")
    return estimator


def score_surrogate(log_q: Tensor, cost: Tensor) -> Tensor:
    """Score-function surrogate whose gradient is an unbiased estimate of grad E_q[cost].

    Reduces the last (sample) axis: one surrogate per member for batched members. ``cost`` is detached and
    centred with the batch-mean baseline rescaled by n/(n-1), which equals the leave-one-out baseline and keeps the
    estimator unbiased; the surrogate's value is not the objective.
    """
    cost = cost.detach()
    n = cost.shape[-1]
    adv = (cost - cost.mean(-1, keepdim=True)) * (n / max(n - 1, 1))
    return (adv * log_q).mean(-1)


def frozen_copy(generator: Generator) -> Generator:
    """A parameter-frozen deep copy (teacher, reference, lagged policy). Autograd still flows through inputs."""
    clone = copy.deepcopy(generator)
    clone.requires_grad_(False)
    return clone


@torch.no_grad()
def copy_params_(target: Generator, source: Generator) -> None:
    """Overwrite the target's parameters and buffers with the source's."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.copy_(s)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)


@torch.no_grad()
def ema_update_(target: Generator, source: Generator, rate: float) -> None:
    """target <- (1 - rate) target + rate source, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, rate)
