"""Report sections without verdicts: every method's old mass over training (each family, bands over seeds, from
the claims' own runs), and the density of a GMM over training (redrawn from its recorded components)."""

from __future__ import annotations

import numpy as np
import torch

from ptforget.check.claims.common import gmm_at
from ptforget.check.registry import Claim, Section, register
from ptforget.check.runs import RunSpec


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
    """Every method's old-region mass over training, one figure per family (mean and 95% band over seeds)."""

    id, title, order = "methods", "Method comparison", 18

    def runs(self, ctx):
        return [s for g in ctx.families for s in method_runs(ctx, g).values()]

    def rows(self, ctx, got):
        figs = []
        for g in ctx.families:
            curves = {name: got[spec].curves("old_mass") for name, spec in method_runs(ctx, g).items()}
            figs.append(ctx.plots.plot_trajectories(curves, ctx.figure_path(f"methods_{g}.png"), key="old_mass",
                                                    title=f"Every method, {g}: old-region mass (1-D task)"))
        yield Section(figs)


@register
class DensityEvolution(Claim):
    """Density of a 1-D GMM under forward and reverse KL, redrawn from the recorded component means and weight."""

    id, title, order = "density", "Density evolution", 19

    def specs(self, ctx):
        runs = method_runs(ctx, "gmm")
        return {"fkl": runs["fkl (P1)"], "rkl": runs["rkl from beta0=0.2 (P6)"]}

    def runs(self, ctx):
        return self.specs(ctx).values() if "gmm" in ctx.families else []

    def rows(self, ctx, got):
        if "gmm" not in ctx.families:
            return
        figs = []
        for obj, spec in self.specs(ctx).items():
            r = got[spec].runs[0]
            delta, beta = float(ctx.value(spec, "task.delta")), float(ctx.value(spec, "task.beta_star"))
            xs = torch.linspace(-delta / 2 - 4, delta / 2 + 4, 400).unsqueeze(-1)
            snaps = []
            for i in np.linspace(0, len(r.steps) - 1, 8).astype(int):
                gen, task = gmm_at(r, delta, beta, int(i))
                with torch.no_grad():
                    snaps.append((int(r.steps[i]), xs[:, 0].numpy(), gen.log_prob(xs).exp().numpy()))
            target = task.p_star.log_prob(xs).exp().numpy()
            figs.append(ctx.plots.plot_density_evolution(
                snaps, ctx.figure_path(f"density_{obj}.png"),
                {"target": (xs[:, 0].numpy(), target), "title": f"GMM density under {obj} (Delta={delta:g})"}))
        yield Section(figs)
