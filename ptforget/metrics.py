"""Forgetting metrics as torchmetrics: each tracks its first, last, min and max value over evaluations.

All of them read one ``measure`` dict per evaluation (see ``measure``), so the Monte-Carlo samples behind the
KL estimates are drawn once per evaluation, not once per metric.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from ptforget.generators.base import Generator, region_stats
from ptforget.tasks import TwoModeTask


@torch.no_grad()
def measure(generator: Generator, task: TwoModeTask, n: int) -> dict[str, Tensor]:
    """Everything evaluated at one step, as tensors on the device (no host sync); with batched members every value
    has the generator's leading member dimension.

    Region view (every family): ``old_mass`` (q-mass of the old Bayes region of p*), ``region_drift`` =
    ||E_q[x | old region] - E_{p*}[x | old region]|| (zero iff the learned conditional old mean matches the
    target's; the reference absorbs the truncation bias of the region; ``drift`` until the run's start is taken
    out, see ``with_drift``), ``new_error`` likewise on the new region;
    ``core_pos`` = (E_q[x | old core] - mu_o*) . u, the old mode's location from its far half (beyond mu_o*, along
    the axis u toward mu_n*): it moves with the old mode and hardly with the new mode's tail, so the drift claims
    read old-mode drift from its change over a run in every family.
    Component view (mixtures): ``weight``, ``comp_drift`` = ||mu_o(t) - mu_o*||, ``comp_new_error`` =
    ||mu_n(t) - mu_n*||, ``comp_bc`` between the learned old and new components.
    KL estimates: ``kl_q_pstar`` = E_q[log q - log p*] and ``kl_pstar_q`` = E_{p*}[log p* - log q]: by quadrature
    on the task's grid in 1-D, by Monte Carlo with n samples each otherwise.
    """
    ro = generator.readout(task, n)
    _, ref_old, ref_new = target_region_stats(task)
    norm = torch.linalg.vector_norm
    out: dict[str, Tensor] = {"old_mass": ro["region_mass"],
                              "region_drift": norm(ro["region_mean"] - ref_old, dim=-1)}
    out["new_error"] = norm(ro["new_region_mean"] - ref_new, dim=-1)
    out["core_pos"] = ro["core_pos"]
    if "weight" in ro:
        out["weight"] = ro["weight"]
        out["comp_drift"] = norm(ro["comp_old_mean"] - task.mu_old, dim=-1)
        out["comp_new_error"] = norm(ro["comp_new_mean"] - task.mu_new, dim=-1)
        out["comp_bc"] = ro["comp_bc"].expand_as(ro["weight"])
        if task.dim <= 3:  # enough to redraw a mixture's density over training (density-evolution figures)
            for i in range(task.dim):
                out[f"mu_old_{i}"] = ro["comp_old_mean"][..., i]
                out[f"mu_new_{i}"] = ro["comp_new_mean"][..., i]
    grid = task.grid()
    if grid is not None:  # log-densities (*members, n) on the grid's n nodes
        x, v = grid
        lq, lp = generator.log_prob(x.expand(*generator.batch_shape, *x.shape)), task.log_prob("star", x)
        out["kl_q_pstar"] = (v * lq.exp() * (lq - lp)).sum(-1)
        out["kl_pstar_q"] = (v * lp.exp() * (lp - lq)).sum(-1)
        return out
    x = generator.sample(n)
    out["kl_q_pstar"] = (generator.log_prob(x) - task.log_prob("star", x)).mean(-1)
    y = task.sample("star", n, generator.batch_shape)
    out["kl_pstar_q"] = (task.log_prob("star", y) - generator.log_prob(y)).mean(-1)
    return out


@torch.no_grad()
def start_fidelity(generator: Generator, task: TwoModeTask, n: int = 16384) -> list[dict[str, float]]:
    """How far each member's start is from q0, the state every prediction assumes (the check's start gate).

    Per member: ``kl_q0`` = KL(q0 || model) (quadrature on the task's grid in 1-D, ``kl_q0_se`` = 0; Monte Carlo with
    n samples of q0 and its standard error otherwise), ``old_mass`` / ``old_mass_q0`` (old-region mass of the start
    and of q0) and ``core`` / ``core_q0`` (the old core's location, ``core_pos``).
    """
    w = torch.tensor([float(task.beta0), 1 - float(task.beta0)], device=task.mu_old.device)
    ref = region_stats(w, torch.stack([task.mu_old, task.mu_new_init]), task.cov.expand(2, task.dim, task.dim), task)
    ro = generator.readout(task, n)
    grid = task.grid()
    if grid is not None:
        x, v = grid
        lq, l0 = generator.log_prob(x.expand(*generator.batch_shape, *x.shape)), task.log_prob("q0", x)
        kl = (v * l0.exp() * (l0 - lq)).sum(-1)
        se = torch.zeros_like(kl)
        method = "quadrature"
    else:
        y = task.sample("q0", n, generator.batch_shape)
        d = task.log_prob("q0", y) - generator.log_prob(y)
        kl, se = d.mean(-1), d.std(-1) / n**0.5
        method = "monte carlo"
    members = kl.reshape(-1).shape[0]
    flat = {k: t.reshape(-1).expand(members).tolist() for k, t in
            {"kl_q0": kl, "kl_q0_se": se, "old_mass": ro["region_mass"], "core": ro["core_pos"]}.items()}
    return [{"kl_q0": flat["kl_q0"][i], "kl_q0_se": flat["kl_q0_se"][i], "method": method,
             "old_mass": flat["old_mass"][i], "old_mass_q0": float(ref["region_mass"]),
             "core": flat["core"][i], "core_q0": float(ref["core_pos"])} for i in range(members)]


def with_drift(measured: dict[str, Tensor], start: Tensor) -> dict[str, Tensor]:
    """``measured`` with ``drift`` = |core_pos - start|: how far the old core has moved since the run's start
    (``start``: its ``core_pos`` at step 0). Forgetting is what the run does, so a start's own leakage or misfit
    (a neural fit of q0) is not drift; NaN where the core is empty (its location is undefined)."""
    return {**measured, "drift": (measured["core_pos"] - start).abs()}


def target_region_stats(task: TwoModeTask) -> tuple[Tensor, Tensor, Tensor]:
    """Old-region mass and the conditional means of p* on the old and new regions (exact, cached)."""
    key = ("target_region", task.device)
    if key not in task._cache:
        w = torch.tensor([task.beta_star, 1 - task.beta_star], device=task.mu_old.device)
        loc = torch.stack([task.mu_old, task.mu_new])
        st = region_stats(w, loc, task.cov.expand(2, task.dim, task.dim), task)
        task._cache[key] = (st["region_mass"], st["region_mean"], st["new_region_mean"])
    return task._cache[key]


class Tracked(Metric):
    """First, last, min and max of one measured quantity over the evaluations of a run."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        # persistent: they travel in resume checkpoints; with batched seeds they become (S,) tensors
        self.add_state("first", torch.tensor(float("nan")), dist_reduce_fx=None, persistent=True)
        self.add_state("last", torch.tensor(float("nan")), dist_reduce_fx=None, persistent=True)
        self.add_state("low", torch.tensor(float("inf")), dist_reduce_fx=None, persistent=True)
        self.add_state("high", torch.tensor(float("-inf")), dist_reduce_fx=None, persistent=True)
        self.add_state("count", torch.tensor(0), dist_reduce_fx=None, persistent=True)

    def update(self, measured: dict[str, Tensor], alive: Tensor | None = None) -> None:  # type: ignore[override]
        """Fold in one evaluation; ``alive`` (bool, per member) freezes diverged members at their last value."""
        if self.key not in measured:
            return
        v = measured[self.key].detach().to(self.last.dtype)
        if alive is not None:
            v = torch.where(alive, v, self.last)
        self.first = torch.where(self.count == 0, v, self.first)
        self.last = v
        self.low = torch.fmin(self.low, v)  # over the defined values: an undefined (NaN) one is skipped
        self.high = torch.fmax(self.high, v)
        self.count = self.count + 1

    def compute(self) -> dict[str, Tensor]:
        """first, last, and min / max over the values that were defined (NaN when none was)."""
        none = torch.isinf(self.low) & (self.low > 0)
        return {"first": self.first, "last": self.last, "min": torch.where(none, torch.nan, self.low),
                "max": torch.where(none, torch.nan, self.high)}


class OldMass(Tracked):
    """Old-region mass of q (mass forgetting in the region view)."""

    def __init__(self) -> None:
        super().__init__("old_mass")


class OldWeight(Tracked):
    """Weight of the old component (mixtures)."""

    def __init__(self) -> None:
        super().__init__("weight")


class OldDrift(Tracked):
    """Old-mode drift: how far the old core has moved since the run's start, every family (``with_drift``)."""

    def __init__(self) -> None:
        super().__init__("drift")


class RegionDrift(Tracked):
    """||E_q[x | old region] - E_p*[x | old region]||: the region mean's distance from p*'s (includes the start's
    own misfit: a model that starts with leakage has it from step 0)."""

    def __init__(self) -> None:
        super().__init__("region_drift")


class ComponentDrift(Tracked):
    """||mu_o(t) - mu_o*|| of the old component (mixtures)."""

    def __init__(self) -> None:
        super().__init__("comp_drift")


class NewError(Tracked):
    def __init__(self) -> None:
        super().__init__("new_error")


class ComponentNewError(Tracked):
    def __init__(self) -> None:
        super().__init__("comp_new_error")


class ReverseKLEstimate(Tracked):
    def __init__(self) -> None:
        super().__init__("kl_q_pstar")


class ForwardKLEstimate(Tracked):
    def __init__(self) -> None:
        super().__init__("kl_pstar_q")


class ComponentOverlap(Tracked):
    """Bhattacharyya coefficient between the learned old and new components (mixtures)."""

    def __init__(self) -> None:
        super().__init__("comp_bc")


class CorePosition(Tracked):
    """Location of the old mode read from its core (``core_pos``), every family."""

    def __init__(self) -> None:
        super().__init__("core_pos")


def forgetting_metrics() -> MetricCollection:
    """The collection the module updates every ``eval_every`` steps."""
    return MetricCollection({
        "old_mass": OldMass(), "weight": OldWeight(), "drift": OldDrift(), "region_drift": RegionDrift(),
        "comp_drift": ComponentDrift(),
        "new_error": NewError(), "comp_new_error": ComponentNewError(), "kl_q_pstar": ReverseKLEstimate(),
        "kl_pstar_q": ForwardKLEstimate(), "comp_bc": ComponentOverlap(), "core_pos": CorePosition(),
    }, compute_groups=False)
