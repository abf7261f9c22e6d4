"""P10m: drift through misassignment (paper R6, R7): the old mean moves because the model misassigns its own
new-mode samples to the old component, on the mixture families (whose component view gives the misassignment).

Statistic, per seed: the least-squares slope, over the Delta grid, of ln sup ||mu_o - mu_o*|| (less the family's
drift floor) against ln M, with M = h x the integral over the run up to the step of that sup of m_{n->o}(t), the
model's old responsibility of its new component's samples at the learned weight and means of each evaluation
(``ptforget.theory.consequences.misassignment_path``). Drift carried by misassignment grows with M: the theory's
slope is the exact population flow's (the same statistic on the two-mode model's GD for the run's Deltas, beta*,
step and length: about 0.55-0.6, below the leading-order 1 because the force per misassigned sample and the
restoring time also change with Delta). Rival: slope 0, drift unrelated to misassignment (a forcing through the
network's shared weights, or capacity). Wrong theory of the negative control: twice the theory's slope.

Runs: the reverse-KL SGD grid of P10 (``profile.deltas``; the GMM's enumerated 16k-batch runs), reused as they are.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ptforget.check import rules
from ptforget.check.claims.common import MIXTURES, sup
from ptforget.check.claims.reverse_kl import drift_controls, drift_floor, sgd_rkl
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.theory import population_flow
from ptforget.theory.consequences import flow_drift_and_misassignment, integrated, log_slope, misassignment_path

#: fewest separations a slope is fitted over
MIN_DELTAS = 3


@functools.lru_cache(maxsize=64)
def flow_slope(deltas: tuple[float, ...], beta_star: float, lr: float, steps: int, new_offset: float) -> float:
    """The exact population flow's slope of ln sup drift against ln M over ``deltas``."""
    pts = [flow_drift_and_misassignment(population_flow("rkl", d, beta_star, None, new_offset, lr, steps), lr)
           for d in deltas]
    return log_slope([m for _, m in pts], [dr for dr, _ in pts])


def run_misassignment(run, lr: float) -> float:
    """M of one learned mixture run up to the step of its sup drift (it depends on the means only through
    mu_n - mu_o)."""
    drift = run.col("comp_drift")
    i = int(np.nanargmax(drift))
    m = misassignment_path(run.col("weight"), run.col("mu_old_0"), run.col("mu_new_0"))
    return integrated(run.steps, m, lr, float(run.steps[i]))


@register
class DriftThroughMisassignment(Claim):
    """The old mode drifts through misassignment (R6): per seed, ln sup drift grows with ln of the integrated
    misassignment read from the model, at the exact flow's slope, on gmm and mdn."""

    id, title, order = "P10m", "Drift through misassignment", 10.5

    def specs(self, ctx):
        fams = [g for g in ctx.families if g in MIXTURES]
        return {(g, float(d)): sgd_rkl(ctx, g, float(d), label=f"p10_sgd_d{d:g}" if g == "gmm" else "")
                for g in fams for d in ctx.profile.deltas}

    def runs(self, ctx):
        out = list(self.specs(ctx).values())
        for g in ctx.families:
            if g in MIXTURES and g != "gmm":
                out += drift_controls(ctx, g).values()
        return out

    def rows(self, ctx, got):
        deltas = [float(d) for d in ctx.profile.deltas]
        series = {}
        for g in [g for g in ctx.families if g in MIXTURES]:
            specs = [self.specs(ctx)[(g, d)] for d in deltas]
            tc = ctx.theory(specs[0])
            if g == "gmm":
                flr, ctrl = 0.0, "the GMM's runs use a 16k enumerated batch: no floor subtracted"
            else:
                flr, ctrl = drift_floor(ctx, got, g)
            drifts = np.array([got[s].values(sup("comp_drift")) for s in specs])  # (Delta, seed)
            mis = np.array([got[s].values(lambda r, h=tc.lr: run_misassignment(r, h)) for s in specs])
            late = [float(r.steps[int(np.nanargmax(r.col("comp_drift")))] / r.steps[-1]) for s in specs
                    for r in got[s].runs]
            use = drifts.mean(1) > 3 * flr
            used = [d for d, u in zip(deltas, use, strict=True) if u]
            n = drifts.shape[1]
            ok = len(used) >= MIN_DELTAS
            values = [log_slope(mis[use, i], drifts[use, i] - flr) if ok else math.nan for i in range(n)]
            theory = flow_slope(tuple(used if ok else deltas), tc.beta_star, tc.lr, tc.steps, tc.new_offset)
            rule = rules.discriminate(theory, rules.Rival(
                "drift unrelated to misassignment", 0.0, "a forcing of the old mode that does not pass through the "
                "model's responsibilities (shared weights of a network, capacity): its sup drift would not follow "
                "the misassigned mass"), wrong=2 * theory)
            series[f"{g} (learned)"] = (np.log(mis.mean(1)), np.log(np.clip(drifts.mean(1) - flr, 1e-12, None)))
            pts = [flow_drift_and_misassignment(population_flow("rkl", d, tc.beta_star, None, tc.new_offset, tc.lr,
                                                                tc.steps), tc.lr) for d in deltas]
            series[f"exact flow, h={tc.lr:g}"] = (np.log([m for _, m in pts]), np.log([dr for dr, _ in pts]))
            means = ", ".join(f"{d:g}: drift {a:.3g}, M {b:.3g}"
                              for d, a, b in zip(deltas, drifts.mean(1), mis.mean(1), strict=True))
            yield Row("Sup drift grows with the integrated misassignment", g, "theory",
                      f"SGD h={tc.lr:g}, beta*={tc.beta_star:g}, Delta in {{{', '.join(f'{d:g}' for d in used)}}}",
                      "slope of ln(sup drift - floor) against ln M (M = h int m_{n->o} dt up to the sup)", values, rule,
                      note=(f"means by Delta: {means}; floor {flr:.3g}; the leading-order law is slope 1, the exact "
                            "flow's slope on these Deltas is the theory's value"),
                      control=ctrl,
                      gate=None if ok else (f"fewer than {MIN_DELTAS} separations with drift above 3 x its floor "
                                            f"(used: {', '.join(f'{d:g}' for d in used) or 'none'})"),
                      converged=max(late) < 0.75,
                      convergence=(f"the sup drift was reached at {max(late):.0%} of the run at the latest (over "
                                   "Deltas and seeds); the criterion: before its last quarter"),
                      sources=[got[s] for s in specs])
        yield Section([ctx.plots.plot_metric_vs_param(
            series, ctx.figure_path("p10m_drift_vs_misassignment.png"), "ln M (integrated misassignment to the sup)",
            "ln(sup drift - floor)", title="P10m: drift through misassignment (one point per Delta)")])
