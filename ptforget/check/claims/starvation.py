"""P13c: the consequence of old-mode starvation (paper R10): what the starved batches do to the model, against
batch size, on-policy and with replay, on every family (1-D task, Delta = 6, the P13 runs).

R10: a batch of B holds no old sample with probability f^B, f = 1 - beta on-policy and (1 - lam)(1 - beta) with
mixture replay (fixed replay slots: never). A starved batch gives the old mode no restoring signal while new-mode
samples keep forcing it, so the theory's consequence is an old-mass dip and an old-mode drift that scale like the
starvation probability, f^B. Statistics, per seed (seed k paired across batch sizes):

* the excess old-mass dip: (m_0 - min_t m_t) / m_0 of the old-region mass less the same run's at a batch
  where starvation is negligible (``baseline_batch``: P(starved) < 1e-4 on-policy; its mean over seeds), i.e. the
  part of the dip the batch size causes (the population dynamics dip the old region's mass as well, the same at
  every B: 0.107 on the GMM at B = 4, 16 and with every sampling); and likewise the excess sup drift
  (||mu_o - mu_o*||). Per seed, the least-squares slope of ln(excess) against B over
  ``profile.starvation_batches``. Theory: ln f. Rival: the slope ln(1/B) has on the same grid (the excess as
  ordinary minibatch noise, whose variance falls like 1/B). Wrong theory: the other sampling's factor (replay's for
  on-policy, on-policy's for replay). A row where the excess is not positive for every B and seed is untestable
  (its premise, a measurable starvation effect, fails; keeping only the positive seeds would select noise).
* fixed slots against on-policy at the smallest B: the ratio of the excess dips (seed k / seed k). Theory: 0 (no
  starved batch, so no starvation dip). Rival: 1 (a dip from minibatch noise is the same however the batch is drawn).

The runs use plain SGD at the family's profile settings (the theory's dynamics: with Adam, P13's runs dip as much
at B = 180 as at B = 4, its normalisation turning the weight's small mean gradient into lr-sized steps), on the
mixture families (the flows fail the start gate and pretrain per run; they join when their start is fixed).

Converged: the statistic's extreme was reached before the run's last quarter deepened it by more than
``plateau_fraction`` of itself (median over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ptforget.check import rules
from ptforget.check.claims.common import MIXTURES
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.check.runs import Run, RunSpec
from ptforget.theory.consequences import inverse_batch_slope, starvation_log_factor

MODES = (("on-policy", 0.0, "mixture"), ("mixture replay", 0.3, "mixture"), ("fixed slots", 0.3, "fixed_slots"))


def baseline_batch(beta: float) -> int:
    """The smallest batch at which an on-policy batch is starved with probability below 1e-4: (1-beta)^B < 1e-4."""
    return math.ceil(math.log(1e-4) / math.log1p(-beta))


def dip_series(run: Run) -> np.ndarray:
    """The old-region mass's fall below its start, relative to it, over the run."""
    m = run.col("old_mass")
    return np.maximum(0.0, (m[0] - m) / m[0])


def drift_series(run: Run) -> np.ndarray:
    """The old component's distance from mu_o* over the run (mixtures: their component view)."""
    return run.col("comp_drift")


def settled_extreme(runs: list[Run], series: Callable[[Run], np.ndarray], frac: float) -> tuple[bool, float]:
    """(converged, the median deepening): the share of a run's sup of ``series`` reached only in its last
    quarter, median over seeds, below ``frac``."""
    deep = []
    for r in runs:
        v = series(r)
        q = max(1, len(v) - math.ceil(0.25 * len(v)))
        top = float(np.nanmax(v))
        deep.append((top - float(np.nanmax(v[:q]))) / top if top > 0 else 0.0)
    med = float(np.median(deep)) if deep else math.nan
    return bool(math.isfinite(med) and med <= frac), med


def batch_slope(batches: list[int], stats: np.ndarray) -> list[float]:
    """Per seed, the least-squares slope of ln(statistic) against B (``stats`` is (B, seed)); NaN where a
    statistic is not positive."""
    out = []
    for i in range(stats.shape[1]):
        y = stats[:, i]
        out.append(float(np.polyfit(batches, np.log(y), 1)[0]) if np.all(y > 0) else math.nan)
    return out


def positive_gate(excess: np.ndarray, stat: str, batches: list[int]) -> str | None:
    """The premise of a scaling in B: the effect is measurable, i.e. the excess over the large-batch baseline is
    positive at every B in every seed (dropping the others would keep only the seeds where noise made it so)."""
    bad = int(np.sum(~(excess > 0)))
    if not bad:
        return None
    return (f"no starvation effect above the large-batch baseline: the excess {stat} is not positive in {bad} of "
            f"{excess.size} (B, seed) pairs (B in {{{', '.join(map(str, batches))}}})")


@register
class StarvationConsequence(Claim):
    """Starved batches dip the old mass and drift the old mode like the starvation probability (1-beta*)^B on-policy
    and ((1-lam)(1-beta*))^B with mixture replay; fixed replay slots remove the dip (R10), on every family."""

    id, title, order = "P13c", "The consequence of starvation", 13.5
    steps = 400

    def batches(self, ctx) -> list[int]:
        return [int(b) for b in ctx.profile.get("starvation_batches", ctx.profile.batch_sizes)]

    def spec(self, ctx, g: str, beta: float, lam: float, mode: str, B: int) -> RunSpec:
        return RunSpec(f"p13c_{mode}_lam{lam:g}_B{B}_b{beta:g}", g, (
            *ctx.sgd(g), "objective=rkl_replay", f"objective.lam={lam}", f"objective.mode={mode}",
            f"objective.batch={B}", "task.dim=1", "task.delta=6", f"task.beta_star={beta}", "eval_every=10"))

    def families(self, ctx) -> list[str]:
        return [g for g in ctx.families if g in MIXTURES]

    def specs(self, ctx):
        betas = [float(b) for b in ctx.profile.get("starvation_betas", [0.05])]
        fams = self.families(ctx)
        out = {(g, beta, label, B): self.spec(ctx, g, beta, lam, mode, B) for g in fams for beta in betas
               for B in self.batches(ctx) for label, lam, mode in MODES}
        out.update({(g, beta, "baseline", 0): self.spec(ctx, g, beta, 0.0, "mixture", baseline_batch(beta))
                    for g in fams for beta in betas})
        return out

    def runs(self, ctx):
        return self.specs(ctx).values()

    def rows(self, ctx, got):
        batches = self.batches(ctx)
        frac = ctx.gates()["plateau_fraction"]
        rival_slope = inverse_batch_slope(batches)
        specs = self.specs(ctx)
        figs = []
        for g in self.families(ctx):
            for beta in [float(b) for b in ctx.profile.get("starvation_betas", [0.05])]:
                base = got[specs[(g, beta, "baseline", 0)]]
                b0 = float(np.mean([np.nanmax(dip_series(r)) for r in base.runs]))
                figs.append(ctx.plots.plot_metric_vs_param(
                    {label: (batches, [float(np.mean([np.nanmax(dip_series(r)) for r in got[specs[(g, beta, label, B)]]
                                                      .runs])) for B in batches]) for label, _, _ in MODES}
                    | {f"baseline B={baseline_batch(beta)}": (batches, [b0] * len(batches))},
                    ctx.figure_path(f"p13c_dip_{g}_b{beta:g}.png"), "batch size B", "old-mass dip (relative)",
                    title=f"P13c: old-mass dip against B, {g}, beta*={beta:g} (plain SGD)", logy=True))

                def excess(rr, series, n, base=base):  # per seed: the sup less the baseline's mean over seeds
                    b = float(np.mean([np.nanmax(series(r)) for r in base.runs]))
                    return [float(np.nanmax(series(a))) - b for a in rr.runs[:n]]

                for label, lam, mode in MODES[:2]:
                    res = [got[specs[(g, beta, label, B)]] for B in batches]
                    n = min(len(r.runs) for r in res)
                    theory = starvation_log_factor(beta, lam, mode)
                    other = starvation_log_factor(beta, 0.3 if lam == 0 else 0.0, "mixture")
                    for stat, series in (("old-mass dip", dip_series), ("sup ||mu_o - mu_o*||", drift_series)):
                        vals = np.array([excess(rr, series, n) for rr in res])
                        rule = rules.discriminate(theory, rules.Rival(
                            "1/B minibatch noise", rival_slope, "the dip and drift as ordinary SGD noise, whose "
                            "variance falls like 1/B whatever the batch holds"), wrong=other)
                        oks = [settled_extreme(rr.runs[:n], series, frac) for rr in res]
                        means = ", ".join(f"B={B}: {m:.3g}" for B, m in zip(batches, vals.mean(1), strict=True))
                        b0 = float(np.mean([np.nanmax(series(r)) for r in base.runs[:n]]))
                        yield Row(f"Starvation's {stat} scales like the starvation probability", g, "theory",
                                  f"{label}, beta*={beta:g}, B in {{{', '.join(map(str, batches))}}}",
                                  f"slope of ln(excess {stat} over B={baseline_batch(beta)}) against B",
                                  batch_slope(batches, vals), rule, gate=positive_gate(vals, stat, batches),
                                  note=(f"mean excess: {means}; at the baseline B={baseline_batch(beta)}: {b0:.3g}; "
                                        f"theory ln f = {theory:.4g}"),
                                  converged=all(o for o, _ in oks),
                                  convergence=(f"the last quarter deepened the {stat} by at most "
                                               f"{max(d for _, d in oks):.1%} of it (median over seeds, worst B); "
                                               f"the criterion is <= {frac:.0%}"),
                                  sources=[*res, base])
                B = batches[0]
                on, fx = got[specs[(g, beta, "on-policy", B)]], got[specs[(g, beta, "fixed slots", B)]]
                n = min(len(on.runs), len(fx.runs))
                ratio = [b / a if a > 0 else math.nan for a, b in zip(excess(on, dip_series, n),
                                                                     excess(fx, dip_series, n), strict=True)]
                rule = rules.discriminate(0.0, rules.Rival(
                    "1/B minibatch noise", 1.0, "a dip from minibatch noise does not depend on how the batch is "
                    "drawn"), wrong=math.exp(B * starvation_log_factor(beta, 0.3)) / (1 - beta) ** B)
                oks = [settled_extreme(rr.runs[:n], dip_series, frac) for rr in (on, fx)]
                yield Row("Fixed replay slots remove the starvation dip", g, "theory", f"beta*={beta:g}, B={B}",
                          f"excess old-mass dip (over B={baseline_batch(beta)}) with fixed slots / on-policy (seed k / "
                          "seed k)", ratio, rule,
                          gate=positive_gate(np.array([excess(on, dip_series, n)]), "old-mass dip", [B]),
                          note="theory: no starved batch with ceil(lam B) >= 1 slot, so no starvation dip; the "
                          "negative control's wrong theory: the mixture's ratio (1-lam)^B",
                          converged=all(o for o, _ in oks),
                          convergence=(f"the last quarter deepened the dip by at most {max(d for _, d in oks):.1%} "
                                       f"of it (median over seeds); the criterion is <= {frac:.0%}"),
                          sources=[on, fx, base])
        yield Section(figs)
