"""Generator interface shared by mixtures, mixture-density networks and flows.

Every generator gives an exact ``log_prob``, detached ``sample``, a gradient-correct ``expectation`` and a
``readout(task)`` with the region view (old-region mass and conditional old mean), so GMM, MDN and flow results
are comparable. Mixture families add the component view (weight, old mean, new mean).

Batched members: a generator whose parameters carry a leading member dimension (``batch_shape = (S,)``) is S
independent generators in one set of tensors. Every method then takes and returns tensors with that leading
dimension (``log_prob``: x (S, n, d) -> (S, n); ``sample(n)``: (S, n, d); ``expectation``: (S,); readouts (S, ...)),
so objectives and metrics written on the trailing axes serve one run and S members alike. Families that support it
natively (``natively_batched``) build such a copy with ``stack(S)``; the others go through ``ptforget.ensemble``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ptforget.gaussian import halfspace_stats
from ptforget.tasks import TwoModeTask

#: the old core's location (``core_pos``) is undefined (NaN) when the core holds less than this fraction of the
#: model's mass (quadrature and exact views), or fewer than CORE_MIN_SAMPLES Monte-Carlo samples: the conditional
#: mean of an (almost) empty slab is rounding noise (it read -4.77e23 once)
CORE_MIN_MASS = 1e-9
CORE_MIN_SAMPLES = 8

@dataclass(frozen=True)
class StepCost:
    """What a family's training costs on one CPU thread, for planning (``ptforget-check dry_run=true`` and the order
    of the check's jobs); calibrated by ``scripts/calibrate_costs.py`` (whole runs, reverse KL, batch 256).

    A step costs ``fixed_ms + per_sample_us x members x batch``; an evaluation of 8 members ``eval_ms`` (linear in
    the members)."""

    fixed_ms: float
    per_sample_us: float
    eval_ms: float

    def run_seconds(self, steps: int, members: int, batch: int, evaluations: int) -> float:
        step = 1e-3 * self.fixed_ms + 1e-6 * self.per_sample_us * members * batch
        return steps * step + evaluations * 1e-3 * self.eval_ms * max(members, 1) / 8


class Generator(nn.Module):
    """Base class. Subclasses implement ``log_prob``, ``sample`` and ``expectation``."""

    #: the family's training cost (``StepCost``), for planning; see ``planned_cost``
    step_cost: StepCost = StepCost(fixed_ms=1.0, per_sample_us=0.05, eval_ms=5.0)

    @classmethod
    def planned_cost(cls, generator: Mapping[str, Any], task: Mapping[str, Any]) -> StepCost:
        """The step cost of this family with the given generator and task configs (a family whose cost depends on
        its settings refines it)."""
        return cls.step_cost

    #: the family has mixture components (component view, enumerated expectation)
    has_components: bool = False
    #: ``rsample`` gives a reparameterised sample of the whole model
    supports_pathwise: bool = False
    #: every method accepts parameters with a leading member dimension (``stack`` works)
    natively_batched: bool = False
    #: leading member dimensions of the parameters and of every input / output: () for one run, (S,) for S members
    batch_shape: tuple[int, ...] = ()

    def stack(self, size: int, starts: list[Generator] | None = None) -> Generator:
        """A copy holding ``size`` members, each starting at this generator's parameters, or member k at those of
        ``starts[k]`` (generators of this architecture; buffers are shared constants and stay unbatched)."""
        if not self.natively_batched:
            raise TypeError(f"{type(self).__name__} has no native member dimension (use ptforget.ensemble)")
        check_starts(self, size, starts)
        clone = copy.deepcopy(self)
        for name, p in self.named_parameters():
            owner, _, leaf = name.rpartition(".")
            mod = clone.get_submodule(owner) if owner else clone
            stacked = member_values(name, p, size, starts)
            setattr(mod, leaf, nn.Parameter(stacked, requires_grad=p.requires_grad))
        clone.batch_shape = (size,)
        return clone

    def log_prob(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sample(self, n: int) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def rsample(self, n: int) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no whole-model pathwise sampler")

    def expectation(self, f: Callable[[Tensor], Tensor], n: int) -> Tensor:  # pragma: no cover
        """Estimate E_q[f(x)] with a gradient that is correct for this family."""
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups (mixtures split weight / old / new with learning-rate multipliers)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "all"}]

    @property
    def has_projection(self) -> bool:
        """``project_`` changes something (batched seeds skip the per-member loop otherwise)."""
        return False

    def project_(self) -> None:
        """Project parameters back to their feasible set after an optimizer step (no-op by default)."""

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ readout
    @torch.no_grad()
    def region_view(self, task: TwoModeTask, n: int) -> dict[str, Tensor]:
        """Old-region mass and E_q[x | old region], E_q[x | new region]: by quadrature of ``log_prob`` on the
        task's grid in 1-D (no Monte-Carlo noise), by Monte Carlo with n samples otherwise."""
        grid = task.grid()
        if grid is not None:  # q: (*members, n) on the grid's n nodes
            x, v = grid
            q = v * self.log_prob(x.expand(*self.batch_shape, *x.shape)).exp()
            mask = task.old_region(x).to(q.dtype)
            z = q.sum(-1)
            m_old, m_new = (q * mask).sum(-1), (q * (1 - mask)).sum(-1)
            old = (q * mask) @ x / m_old.clamp_min(1e-30).unsqueeze(-1)
            new = (q * (1 - mask)) @ x / m_new.clamp_min(1e-30).unsqueeze(-1)
            a, lo, hi, u = task.old_core()
            t = x @ a
            core = ((t > lo) & (t < hi)).to(q.dtype) * q
            pos = (core @ x / core.sum(-1).clamp_min(1e-30).unsqueeze(-1) - task.mu_old) @ u
            pos = torch.where(core.sum(-1) > CORE_MIN_MASS * z, pos, torch.nan)  # an empty core has no location
            return {"region_mass": m_old / z, "region_mean": old, "new_region_mean": new, "core_pos": pos}
        x = self.sample(n)
        mask = task.old_region(x).to(x.dtype).unsqueeze(-1)
        old = (x * mask).sum(-2) / mask.sum(-2).clamp_min(1.0)
        new = (x * (1 - mask)).sum(-2) / (1 - mask).sum(-2).clamp_min(1.0)
        a, lo, hi, u = task.old_core()
        t = x @ a
        core = ((t > lo) & (t < hi)).to(x.dtype).unsqueeze(-1)
        pos = ((x * core).sum(-2) / core.sum(-2).clamp_min(1.0) - task.mu_old) @ u
        pos = torch.where(core.sum((-2, -1)) >= CORE_MIN_SAMPLES, pos, torch.nan)
        return {"region_mass": mask.mean((-2, -1)), "region_mean": old, "new_region_mean": new, "core_pos": pos}

    @torch.no_grad()
    def component_view(self) -> dict[str, Tensor] | None:
        """Weight of the old component and the old/new component means, where the family has components."""
        return None

    @torch.no_grad()
    def readout(self, task: TwoModeTask, n: int = 4096) -> dict[str, Tensor]:
        """All readouts as (*batch_shape) / (*batch_shape, d) tensors on the generator's device (no host sync)."""
        out = dict(self.region_view(task, n))
        comp = self.component_view()
        if comp is not None:
            out.update(comp)
        return out


def check_starts(template: nn.Module, size: int, starts: list[nn.Module] | None) -> None:
    """``starts`` (None, or one generator per member) must match ``template``: names, shapes and buffers (the
    buffers stay shared, so members whose buffers differed would not start where their solo runs start)."""
    if starts is None:
        return
    if len(starts) != size:
        raise ValueError(f"{len(starts)} member starts for {size} members")
    shapes = {n: (p.shape, p.dtype) for n, p in template.named_parameters()}
    bufs = dict(template.named_buffers())
    for k, g in enumerate(starts):
        if {n: (p.shape, p.dtype) for n, p in g.named_parameters()} != shapes:
            raise ValueError(f"member start {k} has another architecture than the template")
        other = dict(g.named_buffers())
        if other.keys() != bufs.keys() or any(not torch.equal(b, other[n].to(b.device)) for n, b in bufs.items()):
            raise ValueError(f"member start {k} has other buffers than the template (they are shared)")


def member_values(name: str, p: Tensor, size: int, starts: list[nn.Module] | None) -> Tensor:
    """(size, *p.shape): the template's parameter ``name`` (``p``) repeated, or that of each member's start."""
    if starts is None:
        return p.detach().unsqueeze(0).repeat(size, *([1] * p.dim())).clone()
    return torch.stack([dict(g.named_parameters())[name].detach().to(p.device, p.dtype) for g in starts]).clone()


def region_stats(weights: Tensor, loc: Tensor, cov: Tensor, task: TwoModeTask) -> dict[str, Tensor]:
    """Exact region view of a Gaussian mixture: the old region of an equal-covariance task is a half-space, and so
    is the old mode's core (``TwoModeTask.old_core``: a slab, the difference of two half-spaces)."""
    a, b = task.old_region_halfspace()
    mass, old = halfspace_stats(weights, loc, cov, a, b)
    _, new = halfspace_stats(weights, loc, cov, -a, -b)
    ac, lo, hi, u = task.old_core()
    m_lo, mean_lo = halfspace_stats(weights, loc, cov, ac, lo)
    m_hi, mean_hi = halfspace_stats(weights, loc, cov, ac, hi)
    core = (m_lo.unsqueeze(-1) * mean_lo - m_hi.unsqueeze(-1) * mean_hi) / (m_lo - m_hi).clamp_min(1e-30).unsqueeze(-1)
    pos = torch.where(m_lo - m_hi > CORE_MIN_MASS * weights.sum(-1), (core - task.mu_old) @ u, torch.nan)
    return {"region_mass": mass, "region_mean": old, "new_region_mean": new, "core_pos": pos}
