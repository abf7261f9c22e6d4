"""Near-on-policy methods: SDFT P14, TTT-Discover P15, OAPL P16 (paper R11-R13)."""

from __future__ import annotations

import math

import numpy as np

from ptforget.check import rules
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.check.runs import RunSpec
from ptforget.theory import (
    Prediction,
    TheoryConfig,
    bhattacharyya,
    oapl_weight,
    sdft_anchored_weight,
    sdft_weight_after_refreshes,
    ttt_fixed_point,
    ttt_lower_bound,
)


def p14_sdft(cfg: TheoryConfig) -> Prediction:
    """P14: SDFT as reverse KL to a self-teacher: beta follows the teacher's odds; anchored EMA -> anchor."""
    p = Prediction("P14", "SDFT", "beta_k = sigmoid(logit b0 + k log kappa); retained iff kappa >= 1; "
                   "anchored EMA teacher fixed point = anchor", "V / R")
    b0, K = float(cfg.beta0), cfg.refreshes
    ba = cfg.beta_star if cfg.sdft_anchor == "p_star" else 0.0
    p.add("weight_after_refreshes", sdft_weight_after_refreshes(b0, cfg.kappa, K), "",
          f"K={K}, kappa={cfg.kappa:g}")
    p.add("mass_retained", float(cfg.kappa >= 1), "flag", "kappa >= 1")
    p.add("anchored_fixed_point", ba, "", f"anchor {cfg.sdft_anchor}")
    p.add("anchored_weight_after_refreshes", sdft_anchored_weight(b0, ba, cfg.sdft_lam, K), "",
          f"lam={cfg.sdft_lam:g}, exact tracking")
    don = abs(cfg.delta - cfg.new_offset)
    force = math.sqrt(b0 * (1 - b0)) * bhattacharyya(don) * math.sqrt(cfg.dim + don**2 / 4)
    p.add("cross_mode_forcing_bound_at_theta0", force, "", "no restoring term: drift accumulates")
    return p


def p15_ttt_discover(cfg: TheoryConfig) -> Prediction:
    """P15: TTT-Discover entropic objective with KL lam: stationary beta and its lower bound."""
    p = Prediction("P15", "TTT-Discover", "lam=0: beta -> 0; lam>0: logit b_inf = logit b_ref + "
                   "(e^{gR_o}-e^{gR_n})/(lam Z) >= logit b_ref - 1/(lam(1-b_inf))", "R (R✓ two-atom)")
    ro, rn, br = cfg.reward_old, cfg.reward_new, float(cfg.beta_ref)
    if cfg.lam > 0:
        binf = ttt_fixed_point(cfg.gamma, cfg.lam, ro, rn, br)
        worst = ttt_fixed_point(math.inf, cfg.lam, ro, rn, br)
        p.add("stationary_weight", binf, "", f"gamma={cfg.gamma:g}, lam={cfg.lam:g}")
        p.add("lower_bound", ttt_lower_bound(binf, cfg.lam, br), "", "")
        p.add("worst_case_weight_gamma_inf", worst, "", "bound tight")
    else:
        p.add("stationary_weight", ttt_fixed_point(cfg.gamma, 0.0, ro, rn, br), "", "no KL anchor")
    p.add("stationary_weight_no_kl", ttt_fixed_point(cfg.gamma, 0.0, ro, rn, br), "", "lam = 0")
    return p


def p16_oapl(cfg: TheoryConfig) -> Prediction:
    """P16: OAPL over K lag refreshes: beta_K = sigmoid(logit b0 - K (r_n - r_o)/tau)."""
    p = Prediction("P16", "OAPL", "beta_K = sigmoid(logit b0 - K(r_n - r_o)/tau); retained iff r_o >= r_n",
                   "R")
    b0, K = float(cfg.beta0), cfg.refreshes
    p.add("weight_after_refreshes", oapl_weight(b0, K, cfg.reward_old, cfg.reward_new, cfg.tau), "",
          f"K={K}, tau={cfg.tau:g}")
    p.add("logit_shift_per_refresh", -(cfg.reward_new - cfg.reward_old) / cfg.tau, "nats", "")
    p.add("mass_retained", float(cfg.reward_old >= cfg.reward_new), "flag", "r_o >= r_n")
    p.add("drift_scale_bc", bhattacharyya(cfg.delta), "", "drift O(BC)")
    return p


@register
class SDFTRetention(Claim):
    """SDFT: anchor p* keeps beta*, anchor p_new slowly forgets, the ICL teacher keeps w0."""

    id, title, order = "P14", "SDFT", 14
    TEACHERS = (("anchor p*", ("objective.teacher=anchor", "objective.anchor=star")),
                ("anchor p_new", ("objective.teacher=anchor", "objective.anchor=new")),
                ("icl", ("objective.teacher=icl",)))

    def specs(self, ctx):
        steps = 3 * int(ctx.profile.steps) // 2
        return {label: RunSpec(f"p14_{label.replace(' ', '_').replace('*', 'star')}", "gmm",
                               ("objective=sdft", *over, f"trainer.max_steps={steps}"))
                for label, over in self.TEACHERS}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        curves = {}
        for label, spec in self.specs(ctx).items():
            vals = got[spec].values("weight")
            curves[label] = got[spec].curves("weight")
            if label == "anchor p_new":
                yield Row("SDFT anchored to p_new slowly forgets", "gmm", "theory", label, "final old weight", vals,
                          rules.between(1e-3, 0.45, "below 0.45 but not yet 0"))
            else:
                yield Row(f"SDFT ({label}) keeps the old weight", "gmm", "theory", label, "final old weight", vals,
                          rules.near(0.5, 0.05, "a tenth of beta*"))
        yield Section([ctx.plots.plot_trajectories(curves, ctx.figure_path("p14_sdft.png"), key="weight",
                                                   title="P14: SDFT teachers, old weight")])

    predict = staticmethod(p14_sdft)


@register
class TTTFixedPoint(Claim):
    """TTT-Discover: with a KL anchor the old weight settles at the R12 fixed point; without it, it collapses."""

    id, title, order = "P15", "TTT-Discover", 15
    gamma, lam = 1.0, 0.5

    def specs(self, ctx):
        common = ("objective=ttt_discover", "task.reward_kind=new_region", "task.delta=6",
                  "objective.reward=new_region", f"objective.beta={self.gamma}",
                  f"trainer.max_steps={3 * int(ctx.profile.steps) // 2}")
        return {"kl": RunSpec("p15_kl", "gmm", (*common, f"objective.lam={self.lam}")),
                "nokl": RunSpec("p15_nokl", "gmm", (*common, "objective.lam=0"))}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        specs = self.specs(ctx)
        tc = ctx.theory(specs["kl"])
        pred = ttt_fixed_point(tc.gamma, tc.lam, tc.reward_old, tc.reward_new, float(tc.beta_ref))
        rs, r0 = got[specs["kl"]], got[specs["nokl"]]
        yield Row("TTT-Discover with KL anchor: R12 fixed point", "gmm", "theory",
                  f"gamma={tc.gamma:g}, lambda={tc.lam:g}", "final old weight", rs.values("weight"),
                  rules.near(pred, 0.05, "an absolute band"))
        yield Row("TTT-Discover without KL: old weight -> 0", "gmm", "theory", "lambda=0", "final old weight",
                  r0.values("weight"), rules.at_most(0.05, "a tenth of beta*"))
        steps = int(ctx.value(specs["kl"], "trainer.max_steps"))
        yield Section([ctx.plots.plot_trajectories(
            {f"lambda={tc.lam:g}": rs.curves("weight"), "lambda=0": r0.curves("weight")},
            ctx.figure_path("p15_ttt.png"), key="weight", title="P15: TTT-Discover, old weight",
            theory={"R12 fixed point": (np.array([0, steps]), np.array([pred, pred]))})])

    predict = staticmethod(p15_ttt_discover)


@register
class OAPLSyncs(Claim):
    """OAPL: the old weight falls by (r_n - r_o)/tau in logit at each lag sync; a fixed reference keeps it."""

    id, title, order = "P16", "OAPL", 16
    tau, lag, syncs = 2.0, 150, 4

    def specs(self, ctx):
        common = ("objective=oapl", "task.delta=6", "objective.reward=new_region", f"objective.beta1={self.tau}",
                  f"trainer.max_steps={self.lag * self.syncs}", "eval_every=10", "optimizer.lr=0.05")
        return {"lag": RunSpec("p16_lag", "gmm", (*common, f"objective.lag={self.lag}")),
                "fixed": RunSpec("p16_fixed", "gmm", (*common, "objective.lag=null"))}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        specs = self.specs(ctx)
        tc = ctx.theory(specs["lag"])
        b0 = float(tc.beta0)
        rs, ri = got[specs["lag"]], got[specs["fixed"]]
        for k in range(1, self.syncs + 1):
            pred = oapl_weight(b0, k, 0.0, 1.0, tc.tau)
            vals = rs.values(lambda r, k=k: float(np.interp(k * self.lag, r.steps, r.col("weight"))))
            yield Row("OAPL: weight after k lag periods", "gmm", "theory", f"tau={tc.tau:g}, L={self.lag}, k={k}",
                      "old weight at the k-th sync", vals, rules.near(pred, 0.05, "an absolute band"))
        pred = oapl_weight(b0, 1, 0.0, 1.0, tc.tau)
        yield Row("OAPL with a fixed reference: one bounded shift", "gmm", "theory", f"tau={tc.tau:g}, L=inf",
                  "final old weight", ri.values("weight"), rules.near(pred, 0.05, "an absolute band"))
        steps = self.lag * self.syncs
        t = np.arange(0, steps + 1)
        w = np.array([oapl_weight(b0, int(s // self.lag), 0.0, 1.0, tc.tau) for s in t])
        yield Section([ctx.plots.plot_trajectories(
            {f"L={self.lag}": rs.curves("weight"), "L=inf": ri.curves("weight")}, ctx.figure_path("p16_oapl.png"),
            key="weight", title="P16: OAPL, old weight", theory={"R13 per sync": (t, w)})])

    predict = staticmethod(p16_oapl)
