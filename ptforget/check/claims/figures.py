"""Report sections without verdicts: every method over training (each family, bands over seeds, from the claims'
own runs), and how the model's density moves under forward and reverse KL in every family (from the density
snapshots each run records with its exact ``log_prob``)."""

from __future__ import annotations

import numpy as np
import torch

from ptforget.check.claims.common import gmm_at
from ptforget.check.registry import Claim, Section, register
from ptforget.check.runs import Run, RunSpec


def method_runs(ctx, family: str) -> dict[str, RunSpec]:
    """The main run of each method in the claims, from the claims' own declarations (no extra training)."""
    from ptforget.check.claims import forward_kl, methods, replay, reverse_kl

    lam = float(ctx.profile.replay_lambdas[0])
    rlam = float(ctx.profile.get("rkl_replay_lambdas", [0.1])[0])
    return {
        "fkl (P1)": forward_kl.MassCollapse().specs(ctx)[family],
        "rkl from beta0=0.2 (P6)": reverse_kl.Retention().specs(ctx)[family],
        f"fkl_replay lambda={lam:g} (P5)": forward_kl.ReplayOptimum().specs(ctx)[(family, lam)],
        "rkl_replay from beta0=0.2 (P12)": replay.ReverseReplay().specs(ctx)[(family, rlam)],
        "sdft anchor p* from 0.2 (P14)": methods.SDFTConditions().mass_specs(ctx)[(family, "meets")],
        "ttt_discover lambda=0.5 (P15)": methods.TTTConditions().mass_specs(ctx)[(family, "meets")],
        "oapl lag 150 (P16)": methods.OAPLConditions().mass_specs(ctx)[(family, "forgets")],
    }


@register
class MethodComparison(Claim):
    """Every method's old-region mass and new-mode error over training, one figure per family (mean and 95% band
    over seeds)."""

    id, title, order = "methods", "Method comparison", 18

    def runs(self, ctx):
        return [s for g in ctx.families for s in method_runs(ctx, g).values()]

    def rows(self, ctx, got):
        figs = []
        for g in ctx.families:
            curves = {name: {key: got[spec].curves(key) for key in ("old_mass", "new_error")}
                      for name, spec in method_runs(ctx, g).items()}
            figs.append(ctx.plots.plot_method_comparison(
                curves, ctx.figure_path(f"methods_{g}.png"), keys=("old_mass", "new_error"),
                title=f"Every method, {g} (1-D task): mean and 95% band over the seeds (n)"))
        yield Section(figs)


def density_of(run: Run, spec: RunSpec, ctx) -> tuple[list, dict] | None:
    """(snapshots, task info) of a run's density over training: its recorded ``density.npz`` (every family), or for
    a GMM run without one (written before runs recorded it) the mixture redrawn from its recorded components."""
    from ptforget.train import density_snapshots, read_density

    data = read_density(run.path)
    if data is not None:
        snaps, info = density_snapshots(data)
        return (snaps, info) if snaps and len(snaps[0]) == 3 else None  # the check's task is 1-D
    if spec.family != "gmm" or "mu_old_0" not in run.traj:
        return None
    delta, beta = float(ctx.value(spec, "task.delta")), float(ctx.value(spec, "task.beta_star"))
    xs = torch.linspace(-delta / 2 - 4, delta / 2 + 4, 400).unsqueeze(-1)
    snaps = []
    for i in np.linspace(0, len(run.steps) - 1, 6).astype(int):
        gen, task = gmm_at(run, delta, beta, int(i))
        with torch.no_grad():
            snaps.append((int(run.steps[i]), xs[:, 0].numpy(), gen.log_prob(xs).exp().numpy()))
    target = task.p_star.log_prob(xs).exp().numpy()
    return snaps, {"target": (xs[:, 0].numpy(), target), "old_mean": [-delta / 2], "new_mean": [delta / 2]}


@register
class DensityEvolution(Claim):
    """The model's density over training under forward KL (P1) and reverse KL (P6), in every family of the
    profile: one page, a row per family, from each run's density snapshots (its exact log_prob on a grid)."""

    id, title, order = "density", "Density evolution", 19

    def specs(self, ctx, family: str) -> dict[str, RunSpec]:
        runs = method_runs(ctx, family)
        return {"forward KL (SFT)": runs["fkl (P1)"], "reverse KL, beta0=0.2": runs["rkl from beta0=0.2 (P6)"]}

    def runs(self, ctx):
        return [s for g in ctx.families for s in self.specs(ctx, g).values()]

    def rows(self, ctx, got):
        panels = {}
        for g in ctx.families:
            for name, spec in self.specs(ctx, g).items():
                drawn = density_of(got[spec].runs[0], spec, ctx)
                if drawn is not None:
                    snaps, info = drawn
                    panels[(g, name)] = (snaps, info)
        if not panels:
            return
        delta = float(ctx.value(next(iter(self.specs(ctx, ctx.families[0]).values())), "task.delta"))
        fig = ctx.plots.plot_density_panels(
            panels, ctx.figure_path("density.png"),
            title=f"Density over training, first seed of each family (1-D task, Delta={delta:g})")
        yield Section([fig])
