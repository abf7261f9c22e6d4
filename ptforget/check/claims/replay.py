"""Replay claims: reverse KL with IS-corrected replay P12 and old-mode starvation P13 (paper R10), on every
family (1-D task, region view)."""

from __future__ import annotations

import math

import numpy as np

from ptforget.check import rules
from ptforget.check.claims.common import D1, q0_mass, region_of, settled, started_at_prediction, task_of
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.check.runs import RunSpec
from ptforget.theory import Prediction, TheoryConfig, replay_importance_stats, starvation_probability
from ptforget.theory.methods import starvation_given_mass


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
    """Reverse KL with IS-corrected replay leaves the optimum p*: from beta0 = 0.2 the old mass reaches p*'s (R10);
    every importance weight stays below 1/(1-lambda) (a proven bound: sanity)."""

    id, title, order = "P12", "Reverse KL + replay: IS weights", 12

    def specs(self, ctx):
        lams = ctx.profile.get("rkl_replay_lambdas", [0.1])
        return {(g, float(lam)): RunSpec(f"rklr_l{lam:g}_b0.2", g, (
            "objective=rkl_replay", f"objective.lam={lam}", *D1, "task.delta=6", "task.beta0=0.2"))
            for g in ctx.families for lam in lams}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        curves = {}
        for (g, lam), spec in self.specs(ctx).items():
            res = got[spec]
            task = task_of(ctx, spec)
            pred = region_of(task, [(task.beta_star, "old"), (1 - task.beta_star, "new")])["mass"]
            curves[f"{g}, lambda={lam:g}"] = res.curves("old_mass")
            half = 0.5 * (float(task.beta0) + task.beta_star)
            rule = rules.discriminate(pred, [
                rules.Rival("replay moves the optimum to the lambda mixture, as in forward KL",
                            region_of(task, [(lam, "old"), (1 - lam, "new")])["mass"],
                            "replayed old samples as extra training data"),
                rules.Rival("stays at its start", q0_mass(task), "the model's own samples hold it in place")],
                wrong=region_of(task, [(half, "old"), (1 - half, "new")])["mass"])
            yield Row("Reverse KL + replay reaches p*'s old mass from below", g, "theory",
                      f"lambda={lam:g}, Delta={task.delta:g}, beta0={task.beta0:g}", "final old-region mass",
                      res.values("old_mass"), rule, note="the negative control's wrong theory stops halfway",
                      explain=started_at_prediction(spec, (f"task.beta0={task.beta_star}", "task.new_offset=0"),
                                                    "old_mass", pred), **settled(ctx, res, "old_mass", rule))
            bound = 1 / (1 - lam)
            yield Row("IS weights bounded by 1/(1-lambda)", g, "identity", f"lambda={lam:g}",
                      "largest importance weight seen",
                      res.values(lambda r: float(np.nanmax(r.col("obj_max_is_weight")))),
                      rules.at_most(bound * (1 + 1e-5), "a proven bound", exact=True))
        yield Section([ctx.plots.plot_trajectories(curves, ctx.figure_path("p12_rkl_replay.png"), key="old_mass",
                                                   title="P12: reverse KL + replay from beta0=0.2, Delta=6")])

    predict = staticmethod(p12_rkl_replay_is)


@register
class Starvation(Claim):
    """Old-mode starvation: a batch of B holds no old-region sample with probability (1-m)^B on-policy,
    (lam(1-a) + (1-lam)(1-m))^B with mixture replay and (1-a)^k (1-m)^(B-k) with k fixed slots, m the model's
    old-region mass at that step and a = p_old's (R10). The prediction follows each run's own m_t."""

    id, title, order = "P13", "Old-mode starvation", 13
    beta, lam, steps = 0.05, 0.3, 400
    MODES = (("on-policy", 0.0, "mixture"), ("mixture replay", 0.3, "mixture"), ("fixed slots", 0.3, "fixed_slots"))

    def specs(self, ctx):
        return {(g, label, int(B)): RunSpec(f"p13_{mode}_lam{lam:g}_B{B}", g, (
            "objective=rkl_replay", f"objective.lam={lam}", f"objective.mode={mode}", f"objective.batch={B}",
            "task.dim=1", "task.delta=6", f"task.beta_star={self.beta}", f"trainer.max_steps={self.steps}",
            "eval_every=10")) for g in ctx.families for B in ctx.profile.batch_sizes for label, lam, mode in self.MODES}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        curves: dict[str, dict[str, list]] = {}
        for (g, label, B), spec in self.specs(ctx).items():
            task = task_of(ctx, spec)
            lam = float(ctx.value(spec, "objective.lam"))
            mode = str(ctx.value(spec, "objective.mode"))
            a = region_of(task, [(1.0, "old")])["mass"]
            kind = "on_policy" if lam == 0 else mode
            res = got[spec]
            measured, predicted = [], []
            for r in res.runs:
                t = np.arange(self.steps)  # the batches of steps 0..T-1, drawn with the parameters of that step
                m = np.interp(t, r.steps, r.col("old_mass"))
                predicted.append(float(starvation_given_mass(m, B, lam, kind, a).mean()))
                measured.append(float(r.col("obj_starved_frac")[-1]))
            p = float(np.mean(predicted))
            se = math.sqrt(max(p * (1 - p), 1.0 / self.steps) / self.steps)
            # an identity: (1 - m_t)^B from the run's own old mass m_t checks that batches are i.i.d. draws
            yield Row("Starvation probability", g, "identity", f"{label}, B={B}, beta*={self.beta}",
                      "starved fraction of batches minus its prediction from the run's m_t",
                      [x - y for x, y in zip(measured, predicted, strict=True)],
                      rules.near(0.0, 4 * se, f"4 binomial standard errors of one run's fraction ({self.steps} "
                                 f"batches, p(1-p) floored at 1/{self.steps})"),
                      note=f"predicted fraction {p:.4g}, measured {np.mean(measured):.4g}")
            c = curves.setdefault(g, {"batch": [], "measured": [], "predicted": []})
            c["batch"].append((label, B))
            c["measured"].append(float(np.mean(measured)))
            c["predicted"].append(p)
        figs = []
        batches = [int(b) for b in ctx.profile.batch_sizes]
        for g, c in curves.items():
            meas = {label: [m for (lb, _), m in zip(c["batch"], c["measured"], strict=True) if lb == label]
                    for label, _, _ in self.MODES}
            pred = {label: [m for (lb, _), m in zip(c["batch"], c["predicted"], strict=True) if lb == label]
                    for label, _, _ in self.MODES}
            figs.append(ctx.plots.plot_starvation(batches, meas, pred, ctx.figure_path(f"p13_starvation_{g}.png"),
                                                  title=f"P13: starvation, {g}"))
        yield Section(figs)

    predict = staticmethod(p13_starvation)
