"""Replay claims: reverse KL with IS-corrected replay P12 and old-mode starvation P13 (paper R10)."""

from __future__ import annotations

import math

import numpy as np

from ptforget.check import rules
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.check.runs import RunSpec
from ptforget.theory import Prediction, TheoryConfig, replay_importance_stats, starvation_probability


def p12_rkl_replay_is(cfg: TheoryConfig) -> Prediction:
    """P12: reverse KL + IS-corrected replay: optimum unchanged, weight and inflation <= 1/(1-lam)."""
    p = Prediction("P12", "Reverse KL + replay (IS)", "beta -> beta* for any lam; omega <= 1/(1-lam); "
                   "2nd-moment inflation <= 1/(1-lam)", "V / R")
    s = replay_importance_stats(cfg.delta, cfg.beta_star, cfg.replay, cfg.beta0, cfg.new_offset,
                                cfg.replay_source, cfg.dim, cfg.weight)
    p.add("predicted_weight", cfg.beta_star, "", "population objective independent of lam")
    p.add("is_weight_bound", s["weight_bound"], "", "1/(1-lam)")
    p.add("sup_is_weight_at_theta0", s["sup_weight"], "", "exact, on the quadrature grid")
    p.add("variance_inflation_bound", s["variance_inflation_bound"], "", "1/(1-lam)")
    p.add("second_moment_ratio_at_theta0", s["second_moment_ratio"], "", "E_q[omega |g|^2]/E_q[|g|^2]")
    return p


def p13_starvation(cfg: TheoryConfig) -> Prediction:
    """P13: probability of a batch with no old-mode sample (at beta = beta0)."""
    p = Prediction("P13", "Old-mode starvation", "on-policy (1-b)^B; mixture ((1-lam)(1-b))^B <= (1-lam)^B; "
                   "fixed slots 0", "V / R")
    b, B, lam = float(cfg.beta0), cfg.batch, cfg.replay
    p.add("p_starve_on_policy", starvation_probability(b, B, 0.0), "", f"B={B}, beta={b:g}")
    p.add("p_starve_mixture", starvation_probability(b, B, lam, "mixture"), "", f"lam={lam:g}")
    p.add("mixture_bound", (1 - lam) ** B, "", "(1-lam)^B")
    p.add("p_starve_fixed_slots", starvation_probability(b, B, lam, "fixed_slots"), "",
          f"{math.ceil(lam * B)} replay slots")
    p.add("expected_old_on_policy", B * b, "samples", "B beta")
    p.add("expected_old_mixture", B * (lam + (1 - lam) * b), "samples", "B(lam + (1-lam) beta)")
    return p


@register
class ReverseReplay(Claim):
    """Reverse KL + replay: the optimum is unchanged and IS weights stay below 1/(1-lambda)."""

    id, title, order = "P12", "Reverse KL + replay: IS weights", 12

    def specs(self, ctx):
        return {float(lam): RunSpec(f"p12_lam{lam:g}", "gmm", ("objective=rkl_replay", f"objective.lam={lam}"))
                for lam in ctx.profile.replay_lambdas}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        for lam, spec in self.specs(ctx).items():
            res = got[spec]
            beta = float(ctx.value(spec, "task.beta_star"))
            yield Row("Reverse KL + replay keeps beta*", "gmm", "theory", f"lambda={lam:g}", "final old weight",
                      res.values("weight"), rules.near(beta, 0.05, "a tenth of beta*"))
            bound = 1 / (1 - lam)
            yield Row("IS weights bounded by 1/(1-lambda)", "gmm", "identity", f"lambda={lam:g}",
                      "largest importance weight seen",
                      res.values(lambda r: float(np.nanmax(r.col("obj_max_is_weight")))),
                      rules.between(0.0, bound * (1 + 1e-5), "a proven bound"))

    predict = staticmethod(p12_rkl_replay_is)


@register
class Starvation(Claim):
    """Old-mode starvation: (1-b)^B on-policy vs ((1-lam)(1-b))^B with mixture replay, 0 with fixed slots."""

    id, title, order = "P13", "Old-mode starvation", 13
    beta, lam, steps = 0.05, 0.3, 400
    MODES = (("on-policy", 0.0, "mixture"), ("mixture replay", 0.3, "mixture"), ("fixed slots", 0.3, "fixed_slots"))

    def specs(self, ctx):
        return {(label, int(B)): RunSpec(f"p13_{mode}_lam{lam:g}_B{B}", "gmm", (
            "objective=rkl_replay", f"objective.lam={lam}", f"objective.mode={mode}", f"objective.batch={B}",
            "task.delta=6", f"task.beta_star={self.beta}", f"trainer.max_steps={self.steps}", "eval_every=50"),
            seeds=1) for B in ctx.profile.batch_sizes for label, lam, mode in self.MODES}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        batches = [int(b) for b in ctx.profile.batch_sizes]
        measured = {label: [] for label, _, _ in self.MODES}
        predicted = {label: [] for label, _, _ in self.MODES}
        for (label, B), spec in self.specs(ctx).items():
            lam = float(ctx.value(spec, "objective.lam"))
            mode = str(ctx.value(spec, "objective.mode"))
            frac = float(got[spec].runs[0].col("obj_starved_frac")[-1])
            kind = "on_policy" if lam == 0 else mode
            pred = starvation_probability(self.beta, B, lam, kind)
            se = math.sqrt(max(pred * (1 - pred), 1e-12) / self.steps)
            measured[label].append(frac)
            predicted[label].append(pred)
            tol = 4 * se + 0.01
            yield Row("Starvation probability", "gmm", "theory", f"{label}, B={B}",
                      "fraction of batches with no old sample", [frac],
                      rules.near(pred, tol, f"4 binomial SE + 0.01 ({tol:.3f})"))
        yield Section([ctx.plots.plot_starvation(batches, measured, predicted, ctx.figure_path("p13_starvation.png"))])

    predict = staticmethod(p13_starvation)
