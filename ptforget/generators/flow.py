"""Normalizing flows from zuko (RealNVP, or NSF with coupling via passes=2), pretrained to q0.

A fixed affine standardisation (q0's mean and per-coordinate scale) sits in front of the flow so that spline
bounds and initial scales suit the data; it is part of the exact log-density. Flows have no component identity,
so their forgetting is read in the region view only.

Densities and samples go through ``ptforget.generators.flow_native`` (zuko's modules and arithmetic, with a member
dimension and no per-call transform objects): one run and batched members alike (``natively_batched``). A flow
that module does not cover keeps zuko's own calls, and its members go through ``vmap`` (``native_reason`` says why).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import zuko
from torch import Tensor
from zuko.transforms import MonotonicRQSTransform

from ptforget.errors import check, check_choice, is_number
from ptforget.generators import flow_native
from ptforget.generators.base import Generator, StepCost
from ptforget.generators.pretrain import pretrain_mle, pretrain_settings
from ptforget.tasks import TwoModeTask

KINDS = ("nsf", "realnvp")
STANDARDIZE = ("data", "mode")


class Flow(Generator):
    """Coupling flow on R^d with a standard-normal base.

    Args:
        task: the two-mode task (q0 to pretrain to).
        kind: ``nsf`` (neural spline, coupling via passes=2) or ``realnvp`` (affine coupling; needs dim >= 2).
        transforms: number of coupling transforms.
        hidden: hidden widths of each coupling network.
        bins: spline bins (nsf).
        bound: the splines' (co)domain [-bound, bound] in standardised units (nsf; identity outside).
        standardize: the per-coordinate scale of the standardisation: ``data`` (q0's standard deviation) or ``mode``
            (a mode's standard deviation, sqrt(diag Sigma): the modes are then one unit wide whatever Delta).
        pretrain: dict with steps, batch, lr, seed, schedule, objective, refine (see ``pretrain_settings``; no
            steps and no refine skip it).
        cache_dir: where pretrained weights are cached (None disables the cache).
    """

    supports_pathwise = True
    #: calibrated by scripts/calibrate_costs.py, 2026-12-07, on the project's 2-core box under a load average of
    #: ~10, at the quick profile's flow (2 transforms, hidden 32x32, 8 bins): realnvp, nsf on a 1-D task
    #: (element-wise splines), nsf in 2-D
    step_costs: ClassVar[dict[str, StepCost]] = {"realnvp": StepCost(fixed_ms=9.25, per_sample_us=9.14, eval_ms=720.0),
                  "nsf-1d": StepCost(fixed_ms=41.3, per_sample_us=7.69, eval_ms=100.0),
                  "nsf": StepCost(fixed_ms=29.7, per_sample_us=116.0, eval_ms=6860.0)}

    @classmethod
    def planned_cost(cls, generator: Mapping[str, Any], task: Mapping[str, Any]) -> StepCost:
        """The calibrated cost of the kind, scaled by the transforms and (dim >= 2) the conditioner's size."""
        kind, dim = str(generator.get("kind", "nsf")), int(task.get("dim", 2))
        base = cls.step_costs["nsf-1d" if kind == "nsf" and dim == 1 else kind]
        widths = [dim, *[int(h) for h in generator.get("hidden", (64, 64))], dim]
        mlp = sum(a * b for a, b in itertools.pairwise(widths)) / (2 + 32 * 32 + 2 * 32 + 32 * 2)
        scale = int(generator.get("transforms", 4)) / 2 * (1.0 if dim == 1 and kind == "nsf" else mlp)
        return StepCost(base.fixed_ms * int(generator.get("transforms", 4)) / 2, base.per_sample_us * scale,
                        base.eval_ms * scale)

    def __init__(
        self,
        task: TwoModeTask,
        kind: str = "nsf",
        transforms: int = 4,
        hidden: tuple[int, ...] | list[int] = (64, 64),
        bins: int = 8,
        bound: float = 5.0,
        standardize: str = "data",
        pretrain: dict | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_choice(kind, "generator.kind", KINDS)
        check(kind != "realnvp" or task.dim >= 2, "generator.kind", kind,
              "'nsf' when task.dim == 1 (affine coupling needs dim >= 2)")
        check(isinstance(transforms, int) and transforms >= 1, "generator.transforms", transforms,
              "an integer >= 1")
        check(isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1, "generator.bins", bins,
              "an integer >= 1")
        check(is_number(bound) and 0 < bound <= 1e3, "generator.bound", bound, "a number in (0, 1000]")
        check_choice(standardize, "generator.standardize", STANDARDIZE)
        hidden = [int(h) for h in hidden]
        check(all(h >= 1 for h in hidden), "generator.hidden", hidden, "a list of positive integers")
        self.dim = task.dim
        pre = pretrain_settings(pretrain, task)
        # the initial weights come from the pretraining seed alone (not the caller's random state): cached
        # pretrained weights are then exactly what this config would have trained
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(pre["seed"]))
            if kind == "nsf":
                self.flow = zuko.flows.NSF(features=task.dim, context=0, bins=bins, transforms=transforms,
                                           hidden_features=hidden, passes=2)
                for t in self.flow.transform.transforms:  # NSF fixes the splines' bound at 5: set ours
                    t.univariate = functools.partial(MonotonicRQSTransform, bound=float(bound), slope=1e-3)
            else:
                self.flow = zuko.flows.RealNVP(features=task.dim, context=0, transforms=transforms,
                                               hidden_features=hidden)
        #: why the flow cannot run natively (None when it can): a flow configuration flow_native does not cover
        self.native_reason = flow_native.prepare(self.flow)
        self.natively_batched = self.native_reason is None
        # q0's exact mean and per-coordinate scale (no sampling: every pretraining seed gets the same buffers)
        q = task.q0_params()
        w, gap = float(q["weight_old"]), q["mu_old"] - q["mu_new"]
        mode_var = torch.diagonal(task.cov)
        self.register_buffer("shift", w * q["mu_old"] + (1 - w) * q["mu_new"])
        self.register_buffer("scale", (mode_var + (w * (1 - w) * gap**2 if standardize == "data" else 0.0)).sqrt())
        arch = {"kind": kind, "transforms": transforms, "hidden": hidden, "bins": bins, "dim": task.dim,
                "bound": float(bound), "standardize": standardize}
        self.pretrain_stats = (
            pretrain_mle(self, task, kind="flow", arch=arch, cache_dir=cache_dir, **pre)
            if pre["steps"] or pre["refine"] else {}
        )

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.shift) / self.scale
        if self.natively_batched:
            return flow_native.log_prob(self.flow, z) - torch.log(self.scale).sum()
        return self.flow().log_prob(z) - torch.log(self.scale).sum()

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        """Pathwise sample x = T_theta(z) and its exact log-density in one pass; (*B, n, d) and (*B, n)."""
        # out-of-place randn (not the base's in-place normal_) so the sampler also runs under torch.func.vmap
        z = torch.randn(*self.batch_shape, n, self.dim, device=self.shift.device, dtype=self.shift.dtype)
        if self.natively_batched:
            y, lp = flow_native.sample_and_log_prob(self.flow, z)
            return self.shift + self.scale * y, lp - torch.log(self.scale).sum()
        dist = self.flow()
        y, ladj = dist.transform.inv.call_and_ladj(z)
        lp = dist.base.log_prob(z) - ladj
        return self.shift + self.scale * y, lp - torch.log(self.scale).sum()

    def rsample(self, n: int) -> Tensor:
        return self.rsample_and_log_prob(n)[0]

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.rsample(n)

    def expectation(self, f: Callable[[Tensor], Tensor], n: int) -> Tensor:
        """Pathwise: mean of f over reparameterised samples; (*B,)."""
        return f(self.rsample(n)).mean(-1)
