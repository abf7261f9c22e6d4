"""Report sections without verdicts: every method on one task, and the density of a GMM over training."""

from __future__ import annotations

import numpy as np
import torch

from ptforget.check.claims.common import gmm_at
from ptforget.check.registry import Claim, Section, register
from ptforget.check.runs import RunSpec

METHODS = ("fkl", "rkl", "fkl_replay", "rkl_replay", "sdft", "ttt_discover", "oapl")


@register
class MethodComparison(Claim):
    """Every method on the default task: old mass and new-mode error over steps."""

    id, title, order = "methods", "Method comparison", 18

    def specs(self, ctx):
        return {m: RunSpec(f"methods_{m}", "gmm", (f"objective={m}", "eval_every=20"), seeds=1) for m in METHODS}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        curves = {}
        for m, spec in self.specs(ctx).items():
            r = got[spec].runs[0]
            curves[m] = {"step": r.steps, "old_mass": r.col("old_mass"), "new_error": r.col("new_error")}
        yield Section([ctx.plots.plot_method_comparison(curves, ctx.figure_path("methods_compare.png"))])


@register
class DensityEvolution(Claim):
    """Density of a 1-D GMM under forward and reverse KL, redrawn from the recorded component means."""

    id, title, order = "density", "Density evolution", 19

    def specs(self, ctx):
        return {o: RunSpec(f"density_{o}", "gmm", (f"objective={o}", "task.dim=1", "eval_every=25"), seeds=1)
                for o in ("fkl", "rkl")}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        figs = []
        for obj, spec in self.specs(ctx).items():
            r = got[spec].runs[0]
            delta, beta = float(ctx.value(spec, "task.delta")), float(ctx.value(spec, "task.beta_star"))
            xs = torch.linspace(-7, 7, 400).unsqueeze(-1)
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
