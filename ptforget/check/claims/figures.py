"""Report sections without verdicts: every method's old mass over training (each family, bands over seeds, from
the claims' own runs), and the density of a GMM over training (redrawn from its recorded components)."""

from __future__ import annotations

import numpy as np
import torch

from ptforget.check.claims.common import D1, gmm_at
from ptforget.check.claims.methods import OAPL, OAPL_LAG, OAPL_SYNCS, SDFT, TTT, method
from ptforget.check.registry import Claim, Section, register
from ptforget.check.runs import RunSpec


def method_runs(family: str) -> dict[str, RunSpec]:
    """The main run of each method in the claims (the same specs: no extra training)."""
    return {
        "fkl (P1)": RunSpec("fkl_d6", family, ("objective=fkl", *D1, "task.delta=6")),
        "rkl from beta0=0.2 (P6)": RunSpec("rkl_d6_b0.2", family, ("objective=rkl", *D1, "task.delta=6",
                                                                    "task.beta0=0.2")),
        "fkl_replay lambda=0.1 (P5)": RunSpec("fklr_l0.1", family, ("objective=fkl_replay", "objective.lam=0.1",
                                                                     *D1, "task.delta=4")),
        "rkl_replay from beta0=0.2 (P12)": RunSpec("rklr_l0.1_b0.2", family, (
            "objective=rkl_replay", "objective.lam=0.1", *D1, "task.delta=6", "task.beta0=0.2")),
        "sdft anchor p* from 0.2 (P14)": method(family, "sdft_star_b0.2", 6.0, *SDFT, "objective.teacher=anchor",
                                                "objective.anchor=star", "task.beta0=0.2"),
        "oapl lag 150 (P16)": method(family, "oapl_lag_new", 6.0, *OAPL, f"trainer.max_steps={OAPL_LAG * OAPL_SYNCS}",
                                     f"objective.lag={OAPL_LAG}", "objective.reward=new_region"),
    }


@register
class MethodComparison(Claim):
    """Every method's old-region mass over training, one figure per family (mean and 95% band over seeds)."""

    id, title, order = "methods", "Method comparison", 18

    @staticmethod
    def ttt(ctx, g: str) -> RunSpec:
        return method(g, "ttt_lam0.5", 6.0, *TTT, "objective.lam=0.5", f"trainer.max_steps={int(1.5 * ctx.steps(g))}")

    def runs(self, ctx):
        return [s for g in ctx.families for s in method_runs(g).values()] + [self.ttt(ctx, g) for g in ctx.families]

    def rows(self, ctx, got):
        figs = []
        for g in ctx.families:
            curves = {name: got[spec].curves("old_mass") for name, spec in method_runs(g).items()}
            curves["ttt_discover lambda=0.5 (P15)"] = got[self.ttt(ctx, g)].curves("old_mass")
            figs.append(ctx.plots.plot_trajectories(curves, ctx.figure_path(f"methods_{g}.png"), key="old_mass",
                                                    title=f"Every method, {g}: old-region mass (1-D task)"))
        yield Section(figs)


@register
class DensityEvolution(Claim):
    """Density of a 1-D GMM under forward and reverse KL, redrawn from the recorded component means and weight."""

    id, title, order = "density", "Density evolution", 19

    def specs(self, ctx):
        runs = method_runs("gmm")
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
