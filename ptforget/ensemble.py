"""Batched seeds: S independent copies of one generator trained in one process and one optimizer step.

Every parameter of the template generator is stacked along a leading seed dimension; the objective's loss and the
evaluation are run once per member with ``torch.func.vmap`` (``randomness="different"``: each member draws its own
samples). The total loss is the sum of the members' losses, so each member's gradient is exactly its own loss's
gradient, and Adam / SGD act element-wise: member k follows the same update rule as a separate run with its own
random stream. Members are therefore identical *in distribution* to separate runs (not bit-identical: the random
streams differ).

Objectives qualify when their loss is a pure function of the generator and fresh samples (``Objective.batchable``):
forward and reverse KL. Objectives with per-run state (replay counters, frozen teachers, archives) run their seeds
one after another instead (see ``ptforget.train``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.nn.utils.stateless import _reparametrize_module

from ptforget.generators.base import Generator


class SeedEnsemble(nn.Module):
    """Stacked parameters of ``size`` copies of ``template``; buffers (constants) are shared.

    The template itself is kept outside the module tree (its own parameters are not trained); calls swap the
    stacked tensors (or one member's slice) into it for the duration of the call.
    """

    def __init__(self, template: Generator, size: int) -> None:
        super().__init__()
        object.__setattr__(self, "template", template)
        self.size = size
        self.names = [n for n, _ in template.named_parameters()]
        self.stacked = nn.ParameterList([
            nn.Parameter(p.detach().unsqueeze(0).repeat(size, *([1] * p.dim())).clone(), requires_grad=p.requires_grad)
            for _, p in template.named_parameters()
        ])
        for i, p in enumerate(self.stacked):
            self.register_buffer(f"_init_{i}", p.detach().clone(), persistent=False)

    def _move_template(self) -> None:
        dev = self.stacked[0].device
        if self.template.device != dev:
            self.template.to(dev)

    @contextmanager
    def member(self, k: int) -> Iterator[Generator]:
        """The template with member k's parameters (views into the stacked tensors)."""
        self._move_template()
        with _reparametrize_module(self.template, {n: p[k] for n, p in zip(self.names, self.stacked, strict=True)}):
            yield self.template

    def map(self, fn: Callable[[Generator], Any]) -> Any:
        """``fn(member)`` for every member at once; outputs gain a leading seed dimension."""
        self._move_template()
        bufs = dict(self.template.named_buffers())  # read each call: moving the template replaces its buffers

        def one(*params: Tensor) -> Any:
            with _reparametrize_module(self.template, {**dict(zip(self.names, params, strict=True)), **bufs}):
                return fn(self.template)

        return vmap(one, randomness="different")(*self.stacked)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The template's parameter groups (names and learning-rate multipliers) over the stacked tensors."""
        index = {id(p): i for i, (_, p) in enumerate(self.template.named_parameters())}
        return [{**g, "params": [self.stacked[index[id(p)]] for p in g["params"]]}
                for g in self.template.param_groups(lr)]

    @torch.no_grad()
    def project_(self) -> None:
        if not self.template.has_projection:
            return
        for k in range(self.size):
            with self.member(k) as g:
                g.project_()

    @torch.no_grad()
    def finite(self) -> Tensor:
        """(S,) bool: every parameter of the member is finite."""
        ok = torch.ones(self.size, dtype=torch.bool, device=self.stacked[0].device)
        for p in self.stacked:
            ok = ok & torch.isfinite(p).reshape(self.size, -1).all(1)
        return ok

    @torch.no_grad()
    def reset_(self, dead: Tensor) -> None:
        """Put dead members (bool (S,)) back at their initial parameters so they cannot poison shared ops.

        Their results stop at the step they diverged; the reset only keeps later vmapped calls (sampling) valid.
        """
        for i, p in enumerate(self.stacked):
            init = getattr(self, f"_init_{i}")
            p.copy_(torch.where(dead.view(-1, *([1] * (p.dim() - 1))), init, p))
