"""Reverse-KL claims (on-policy, to p*): retention P6, the local rate P7, conditioning P8, drift against
separation P10 and against beta* P11 (paper R5-R8)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ptforget.check import rules
from ptforget.check.claims.common import T6, exact_spec, gmm_at
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.check.runs import RunSpec
from ptforget.stats import fit_slope
from ptforget.theory import (
    Prediction,
    TheoryConfig,
    contraction_factor,
    fisher_condition_number,
    fisher_eigenvalues,
    fisher_information,
    hessian_at_optimum,
)
from ptforget.theory.methods import logit


def p6_rkl_retention(cfg: TheoryConfig) -> Prediction:
    """P6: reverse KL converges to the true target: beta -> beta*, means -> truth, KL -> 0."""
    p = Prediction("P6", "Reverse KL retention", "(beta, mu_o, mu_n) -> (beta*, mu_o*, mu_n*), KL -> 0",
                   "V / R✓")
    r = cfg.flow("rkl")
    p.add("predicted_weight", cfg.beta_star, "", "")
    p.add("flow_final_weight", r["weight"][-1], "", f"after {cfg.steps} steps")
    p.add("flow_final_kl", r["loss"][-1], "nats", "")
    p.add("flow_final_old_mean_error", r["old_mean_error"][-1], "data units", "")
    p.add("flow_final_new_mean_error", r["new_mean_error"][-1], "data units", "")
    return p


def p7_rkl_contraction(cfg: TheoryConfig) -> Prediction:
    """P7: linear convergence of reverse-KL GD with factor 1 - h lambda_min of the Hessian at theta*."""
    p = Prediction("P7", "Reverse KL local rate", "||theta_t - theta*|| ~ (1 - h lambda_min)^t", "V / R✓")
    c = contraction_factor(cfg.delta, cfg.beta_star, cfg.lr, cfg.weight, cfg.dim, cfg.lr_mult, cfg.sigma,
                           cfg.train_means)
    b = cfg.beta_star
    s2 = cfg.sigma**2
    wentry = b * (1 - b) if cfg.weight == "logit" else 1 / (b * (1 - b))
    p.add("lambda_min", c["lambda_min"], "", "of M^1/2 H M^1/2 at theta*")
    p.add("lambda_max", c["lambda_max"], "", "")
    p.add("asymptotic_lambda_min", min(wentry, b / s2, (1 - b) / s2), "", "Delta -> inf, unit multipliers")
    p.add("predicted_factor", c["factor"], "per step", "1 - h lambda_min")
    p.add("spectral_radius", c["spectral_radius"], "per step", "max |1 - h eig|")
    steps = max(cfg.steps, 20000)
    r = cfg.flow("rkl", steps=steps)
    wstar = logit(b) if cfg.weight == "logit" else b
    w = r["weight"]
    wp = np.log(w) - np.log1p(-w) if cfg.weight == "logit" else w
    err = np.sqrt((wp - wstar) ** 2 + r["old_mean_error"] ** 2 + r["new_mean_error"] ** 2)
    i1 = np.nonzero(err < 1e-4)[0]
    i2 = np.nonzero(err < 1e-9)[0]
    if i1.size and i2.size and i2[0] > i1[0]:
        emp = (err[i2[0]] / err[i1[0]]) ** (1.0 / (r["step"][i2[0]] - r["step"][i1[0]]))
    else:
        emp = float("nan")
    p.add("flow_empirical_factor", emp, "per step", "from err 1e-4 -> 1e-9 of the exact flow")
    return p


def p8_condition_number(cfg: TheoryConfig) -> Prediction:
    """P8: Hessian = Fisher at theta*, condition number -> max(b,1-b)/(b(1-b)) (Sigma = I)."""
    p = Prediction("P8", "Conditioning at theta*", "kappa(F) -> max(b*,1-b*)/(b*(1-b*)) kappa(Sigma)",
                   "V / R✓")
    ev = fisher_eigenvalues(cfg.delta, cfg.beta_star, cfg.weight, cfg.dim)
    H = hessian_at_optimum(cfg.delta, cfg.beta_star, cfg.weight, cfg.dim)
    F = fisher_information(cfg.delta, cfg.beta_star, cfg.weight, cfg.dim)
    b = cfg.beta_star
    p.add("condition_number", ev[-1] / ev[0], "", "whitened units")
    p.add("condition_number_limit", max(b, 1 - b) / (b * (1 - b)), "", "Delta -> inf (logit)")
    p.add("lambda_min", ev[0], "", "")
    p.add("lambda_max", ev[-1], "", "")
    p.add("max_abs_hessian_minus_fisher", float(np.abs(H - F).max()), "", "should be ~0")
    return p


def _rkl_drift(cfg: TheoryConfig, **kw: Any) -> tuple[float, float]:
    r = cfg.flow("rkl", **kw)
    return float(r["old_mean_error"].max()), float(r["separation"].min())


def p10_rkl_drift_vs_delta(cfg: TheoryConfig) -> Prediction:
    """P10: reverse-KL sup drift decays like BC at closest approach; slope of log drift vs Dmin^2/8 -> -1."""
    p = Prediction("P10", "Reverse KL drift vs separation", "sup drift ~ e^{-Dmin^2/8} poly(Dmin); "
                   "slope of log drift vs Dmin^2/8 -> -1; bounded by R7", "V / R✓")
    xs, ys = [], []
    b = cfg.beta_star
    for d in cfg.delta_grid:
        drift, dmin = _rkl_drift(cfg, delta=d)
        bound = math.sqrt((1 - b) / b) * math.exp(-dmin**2 / 8) * math.sqrt(cfg.dim + dmin**2 / 4)
        p.add(f"drift[Delta={d:g}]", drift, "data units", f"Dmin = {dmin:.3f}")
        p.add(f"r7_bound[Delta={d:g}]", bound * cfg.sigma, "data units", "O(.) with constant 1")
        if drift > 0:
            xs.append(dmin**2 / 8)
            ys.append(math.log(drift))
    p.add("fitted_slope", fit_slope(np.array(xs), np.array(ys)), "", "predicted -> -1")
    p.add("predicted_slope", -1.0, "", "")
    return p


def _quasi_static_drift(cfg: TheoryConfig, beta: float) -> float:
    """Equilibrium |mu_o - mu_o*| with beta = beta* and mu_n frozen at its start (closest approach)."""
    steps = math.ceil(40.0 / beta)
    r = cfg.flow("rkl", beta_star=beta, beta0=beta, lr=1.0, steps=steps, weight="logit", sigma=1.0,
                 lr_mult={"weight": 0.0, "old": 1.0, "new": 0.0}, train_means=True, record_every=steps)
    return float(r["old_mean_error"][-1]) * cfg.sigma


def p11_rkl_drift_vs_beta(cfg: TheoryConfig) -> Prediction:
    """P11: reverse-KL drift grows like sqrt((1-b*)/b*) as the restoring force beta Sigma^-1 weakens.

    The law is quasi-static (mu_n held at its closest approach). In the exact flow the old mean also responds
    at rate ~beta h, so its transient sup drift can shrink with beta*; both are reported.
    """
    p = Prediction("P11", "Reverse KL drift vs beta*",
                   "drift ratio ~ sqrt((1-b*)/b*) / sqrt((1-b_ref)/b_ref)", "R")
    grid = sorted(cfg.beta_star_grid)
    ref = grid[-1]
    d_ref, _ = _rkl_drift(cfg, beta_star=ref, beta0=ref)
    q_ref = _quasi_static_drift(cfg, ref)
    for b in grid:
        dr, _ = _rkl_drift(cfg, beta_star=b, beta0=b)
        qs = _quasi_static_drift(cfg, b)
        pred = math.sqrt((1 - b) / b) / math.sqrt((1 - ref) / ref)
        p.add(f"predicted_ratio[beta*={b:g}]", pred, "", f"vs beta*={ref:g}")
        p.add(f"quasi_static_drift[beta*={b:g}]", qs, "data units", "mu_n frozen at start")
        p.add(f"quasi_static_ratio[beta*={b:g}]", qs / q_ref if q_ref > 0 else float("nan"), "", "")
        p.add(f"flow_drift[beta*={b:g}]", dr, "data units", "sup over the exact flow")
        p.add(f"flow_drift_ratio[beta*={b:g}]", dr / d_ref if d_ref > 0 else float("nan"), "", "")
    return p


@register
class Retention(Claim):
    """Reverse KL to p* keeps beta* for every family."""

    id, title, order = "P6", "Reverse KL: retention", 6

    def specs(self, ctx):
        return {g: RunSpec(f"p6_rkl_{g}", g, ("objective=rkl", *T6)) for g in ctx.families}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        curves = {}
        for g, spec in self.specs(ctx).items():
            res = got[spec]
            curves[g] = res.curves("old_mass")
            beta = float(ctx.value(spec, "task.beta_star"))
            yield Row("Reverse KL keeps beta*", g, "theory", "Delta=6", "final old-region mass", res.values("old_mass"),
                      rules.near(beta, 0.05, "a tenth of beta*"),
                      note=f"KL(q||p*) final {np.mean(res.values('kl_q_pstar')):.3g}")
        steps = int(ctx.profile.steps)
        yield Section([ctx.plots.plot_trajectories(curves, ctx.figure_path("p6_rkl_old_mass.png"), key="old_mass",
                                                   title="P6: reverse KL to p*, Delta=6: old-region mass",
                                                   theory={"beta*": (np.array([0, steps]), np.array([0.5, 0.5]))})])

    predict = staticmethod(p6_rkl_retention)


@register
class LocalRate(Claim):
    """Reverse-KL GD converges linearly; near theta* the per-step factor is the spectral radius of I - hH."""

    id, title, order = "P7", "Reverse KL: linear convergence", 7

    def spec(self, ctx):
        return RunSpec("p7_rate", "gmm", (
            "objective=rkl", "objective.estimator=enumerate", "optimizer=sgd", "optimizer.lr=0.5", "task.dim=1",
            "task.delta=4.0", "task.beta_star=0.5", "task.beta0=0.35", "task.new_offset=0.5", "trainer.max_steps=120",
            f"objective.batch={4 * int(ctx.profile.exact_batch)}", "eval_every=1"))

    def runs(self, ctx):
        return [self.spec(ctx)]

    def rows(self, ctx, got):
        spec = self.spec(ctx)
        tc = ctx.theory(spec)
        b = tc.beta_star
        pred = contraction_factor(tc.delta, b, tc.lr, tc.weight, tc.dim)["spectral_radius"]
        flow = tc.flow("rkl")

        def rate(step, w, eo, en):
            w = np.clip(w, 1e-9, 1 - 1e-9)
            err = np.sqrt((np.log(w / (1 - w)) - math.log(b / (1 - b))) ** 2 + eo**2 + en**2)
            keep = (err < 0.1) & (err > 0.01) & (step >= 10)
            return float(np.exp(np.polyfit(step[keep], np.log(err[keep]), 1)[0])) if keep.sum() >= 3 else math.nan

        exact = rate(flow["step"], flow["weight"], flow["old_mean_error"], flow["new_mean_error"])
        fitted = got[spec].values(lambda r: rate(r.steps, r.col("weight"), r.col("comp_drift"),
                                                 r.col("comp_new_error")))
        yield Row("Reverse-KL GD converges linearly at the Hessian's rate", "gmm", "consistency",
                  f"SGD h={tc.lr:g}, Delta={tc.delta:g}", "fitted per-step contraction factor", fitted,
                  rules.near(pred, 0.03, "SGD noise on the fitted window"),
                  note=f"exact population flow fitted on the same window: {exact:.4f}")

    predict = staticmethod(p7_rkl_contraction)


@register
class Conditioning(Claim):
    """Hessian = Fisher at theta*; the learned optimum's empirical Fisher has the predicted conditioning."""

    id, title, order = "P8", "Reverse KL: conditioning", 8

    def spec(self, ctx):
        return exact_spec(ctx, "p8_fisher", 4.0, 0.2, 0.5, 300, 50)

    def runs(self, ctx):
        return [self.spec(ctx)]

    def rows(self, ctx, got):
        spec = self.spec(ctx)
        tc = ctx.theory(spec)
        pred = fisher_condition_number(tc.delta, tc.beta_star, "logit", 1)

        def kappa(r):
            gen, task = gmm_at(r, tc.delta, tc.beta_star)
            torch.manual_seed(0)
            x = task.p_star.sample((200_000,)).double()[:, 0]
            beta = float(gen.weights().detach()[0])
            mo, mn = float(gen.mu_old.detach()), float(gen.mu_rest.detach()[0])
            wo = torch.sigmoid(math.log(beta / (1 - beta)) - 0.5 * (x - mo) ** 2 + 0.5 * (x - mn) ** 2)
            s = torch.stack([wo - beta, wo * (x - mo), (1 - wo) * (x - mn)], 1)
            ev = torch.linalg.eigvalsh(s.T @ s / s.shape[0])
            return float(ev[-1] / ev[0])

        yield Row("Condition number of Fisher (= Hessian) at theta*", "gmm", "consistency",
                  f"Delta={tc.delta:g}, beta*={tc.beta_star}", "kappa of the empirical Fisher of the learned model",
                  got[spec].values(kappa), rules.relative(pred, 0.1, "a relative band"))

    predict = staticmethod(p8_condition_number)


@register
class DriftVsSeparation(Claim):
    """Reverse-KL old-mean drift decays like BC: slope of log drift vs Delta_min^2/8 -> -1."""

    id, title, order = "P10", "Reverse-KL drift vs separation", 10

    def specs(self, ctx):
        return {float(d): exact_spec(ctx, f"p10_d{d:g}", float(d), 0.5, 0.2, 400, 2) for d in ctx.profile.deltas}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        measured, predicted, dmin = [], [], []
        specs = self.specs(ctx)
        for spec in specs.values():
            flow = ctx.theory(spec).flow("rkl")
            measured.append(got[spec].values(lambda r: float(np.max(r.col("comp_drift")))))
            predicted.append(float(np.max(flow["old_mean_error"])))
            dmin.append(float(np.min(flow["separation"])))
        deltas = list(specs)
        x = np.array(dmin) ** 2 / 8
        slopes = [fit_slope(x, np.log([m[i] for m in measured])) for i in range(len(measured[0]))]
        yield Row("Reverse-KL drift decays like BC", "gmm", "theory", f"SGD, Delta {deltas[0]:g}..{deltas[-1]:g}",
                  "slope of log sup-drift vs Delta_min^2/8", slopes,
                  rules.between(-1.4, -0.6, "theory: -1; a band for the poly(Delta) factor"),
                  note=f"exact flow slope {fit_slope(x, np.log(predicted)):.3f}")
        for delta, m, pv in zip(deltas, measured, predicted, strict=True):
            yield Row("Reverse-KL sup drift = exact flow", "gmm", "consistency", f"SGD, Delta={delta:g}",
                      "sup ||mu_o - mu_o*||", m, rules.near(pv, 0.3 * pv + 2e-3, "30% + 0.002"))
        yield Section([ctx.plots.plot_drift_vs_delta(
            deltas, {"learned (mean over seeds)": [float(np.mean(m)) for m in measured]},
            ctx.figure_path("p10_drift_vs_delta.png"), theory=predicted, show_bc=True,
            title="P10: reverse-KL sup drift vs separation (exact flow dashed)")])

    predict = staticmethod(p10_rkl_drift_vs_delta)


@register
class DriftVsBeta(Claim):
    """Drift vs beta*: the paper's sqrt((1-b)/b) law against the exact flow and learned runs."""

    id, title, order = "P11", "Reverse-KL drift vs beta*", 11

    def specs(self, ctx):
        return {b: exact_spec(ctx, f"p11_b{b:g}", 4.0, b, 0.2, 400, 2) for b in (0.2, 0.5)}

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        res = {}
        for b, spec in self.specs(ctx).items():
            flow = ctx.theory(spec).flow("rkl")
            res[b] = (got[spec].values(lambda r: float(np.max(r.col("comp_drift")))),
                      float(np.max(flow["old_mean_error"])))
        ratio = [a / c for a, c in zip(res[0.2][0], res[0.5][0], strict=True)]
        law = math.sqrt((1 - 0.2) / 0.2) / math.sqrt((1 - 0.5) / 0.5)
        exact = res[0.2][1] / res[0.5][1]
        yield Row("Drift grows like sqrt((1-b*)/b*) (paper's law)", "gmm", "theory", "SGD, Delta=4, b*=0.2 vs 0.5",
                  "sup-drift ratio b*=0.2 / b*=0.5", ratio, rules.relative(law, 0.25, "a relative band for the law"),
                  note=f"exact flow ratio {exact:.3f}")
        yield Row("Drift vs b*: exact flow", "gmm", "consistency", "SGD, Delta=4, b*=0.2 vs 0.5",
                  "sup-drift ratio b*=0.2 / b*=0.5", ratio, rules.relative(exact, 0.25, "a relative band"))

    predict = staticmethod(p11_rkl_drift_vs_beta)
