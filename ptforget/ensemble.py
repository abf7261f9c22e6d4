"""Batched seeds: S independent copies of one generator trained in one process and one optimizer step.

``batched(generator, S)`` returns a generator whose parameters carry a leading member dimension (see
``ptforget.generators.base``). Families that are ``natively_batched`` (GMM, MDN, the flows that
``ptforget.generators.flow_native`` covers) do it with their own tensors: batched matmuls, one set of stacked
parameters, no per-member dispatch. The others (a zuko flow that module does not cover) get a ``SeedEnsemble``,
the same interface implemented with ``torch.func.vmap`` over a single-member template (``randomness="different"``:
each member draws its own samples).

The total loss is the sum of the members' losses, so each member's gradient is exactly its own loss's gradient,
and Adam / SGD act element-wise: member k follows the same update rule as a separate run with its own random
stream. Members are therefore identical *in distribution* to separate runs (not bit-identical: the random streams
differ). ``members_finite`` and ``reset_members_`` are the per-member divergence tools of the module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.nn.utils.stateless import _reparametrize_module

from ptforget.generators.base import Generator, check_starts, member_values

log = logging.getLogger(__name__)


def batched(generator: Generator, size: int, starts: list[Generator] | None = None) -> Generator:
    """``size`` members starting at ``generator``'s parameters, or member k at ``starts[k]``'s (same architecture
    and buffers: each seed's own pretrained start, see ``ptforget.build.member_starts``): natively stacked where the
    family allows it."""
    if generator.natively_batched:
        return generator.stack(size, starts)
    reason = getattr(generator, "native_reason", None)
    if reason:
        log.info("%s: members through vmap (%s)", type(generator).__name__, reason)
    return SeedEnsemble(generator, size, starts)


@torch.no_grad()
def members_finite(generator: Generator) -> Tensor:
    """(S,) bool: every parameter of the member is finite (a generator with batched members)."""
    (size,) = generator.batch_shape
    ok = torch.ones(size, dtype=torch.bool, device=generator.device)
    for p in generator.parameters():
        ok = ok & torch.isfinite(p).reshape(size, -1).all(1)
    return ok


@torch.no_grad()
def reset_members_(generator: Generator, dead: Tensor, init: list[Tensor]) -> None:
    """Put dead members (bool (S,)) back at their initial parameters ``init`` so they cannot poison shared ops.

    Their results stop at the step they diverged; the reset only keeps later batched calls (sampling) valid.
    """
    for p, p0 in zip(generator.parameters(), init, strict=True):
        p.copy_(torch.where(dead.view(-1, *([1] * (p.dim() - 1))), p0, p))


class SeedEnsemble(Generator):
    """Stacked parameters of ``size`` copies of ``template`` (or of ``starts``, one per member) behind the
    batched-generator interface (vmap).

    Buffers (constants) are shared. The template is kept outside the module tree (its own parameters are not
    trained); every call runs it through ``functional_call`` with one member's parameters under ``vmap``.
    """

    def __init__(self, template: Generator, size: int, starts: list[Generator] | None = None) -> None:
        super().__init__()
        check_starts(template, size, starts)
        object.__setattr__(self, "template", template)
        self.batch_shape = (size,)
        self.has_components = template.has_components
        self.supports_pathwise = template.supports_pathwise
        self.pretrain_stats = getattr(template, "pretrain_stats", {})
        self.names = [n for n, _ in template.named_parameters()]
        self.stacked = nn.ParameterList([
            nn.Parameter(member_values(name, p, size, starts), requires_grad=p.requires_grad)
            for name, p in template.named_parameters()
        ])

    def _move_template(self) -> None:
        p = self.stacked[0]
        if self.template.device != p.device or next(self.template.parameters()).dtype != p.dtype:
            self.template.to(device=p.device, dtype=p.dtype)

    def _vmap(self, fn: Callable[..., Any], *args: Tensor) -> Any:
        """``fn(member, *args_k)`` for every member at once; args and outputs carry the member dimension."""
        self._move_template()
        bufs = dict(self.template.named_buffers())  # read each call: moving the template replaces its buffers

        def one(params: tuple[Tensor, ...], *a: Tensor) -> Any:
            with _reparametrize_module(self.template, {**dict(zip(self.names, params, strict=True)), **bufs}):
                return fn(self.template, *a)

        return vmap(one, randomness="different")(tuple(self.stacked), *args)

    @contextmanager
    def member(self, k: int) -> Iterator[Generator]:
        """The template with member k's parameters (views into the stacked tensors)."""
        self._move_template()
        with _reparametrize_module(self.template, {n: p[k] for n, p in zip(self.names, self.stacked, strict=True)}):
            yield self.template

    def log_prob(self, x: Tensor) -> Tensor:
        return self._vmap(lambda g, xk: g.log_prob(xk), x)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self._vmap(lambda g: g.sample(n))

    def rsample(self, n: int) -> Tensor:
        return self._vmap(lambda g: g.rsample(n))

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        return self._vmap(lambda g: g.rsample_and_log_prob(n))

    def expectation(self, f: Callable[[Tensor], Tensor], n: int) -> Tensor:
        if not self.supports_pathwise:
            raise NotImplementedError(f"{type(self.template).__name__}: batched expectation needs a pathwise sampler")
        return f(self.rsample(n)).mean(-1)

    @torch.no_grad()
    def component_view(self) -> dict[str, Tensor] | None:
        if not self.template.has_components:
            return None
        return self._vmap(lambda g: g.component_view())

    @torch.no_grad()
    def region_view(self, task: Any, n: int) -> dict[str, Tensor]:
        return self._vmap(lambda g: g.region_view(task, n))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The template's parameter groups (names and learning-rate multipliers) over the stacked tensors."""
        index = {id(p): i for i, (_, p) in enumerate(self.template.named_parameters())}
        return [{**g, "params": [self.stacked[index[id(p)]] for p in g["params"]]}
                for g in self.template.param_groups(lr)]

    @property
    def has_projection(self) -> bool:
        return self.template.has_projection

    @torch.no_grad()
    def project_(self) -> None:
        if not self.template.has_projection:
            return
        for k in range(self.batch_shape[0]):
            with self.member(k) as g:
                g.project_()
