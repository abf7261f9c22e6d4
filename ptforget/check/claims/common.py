"""What the claim modules share: the standard tasks, exact region predictions for any family, the measured noise
floor behind a tolerance, and the GMM a run had at a recorded step.

Region view. Every family is judged on the same two numbers: the q-mass of the old Bayes region of p* and the
drift ||E_q[x | old region] - E_p*[x | old region]||. When the theory's prediction is a distribution (p_new under
forward KL, p* under reverse KL, the replay mixture under forward KL with replay), its region view is exact
(``region_of``), whatever family is trained to it.

Noise floor. A tolerance around a fixed-point prediction is measured, not chosen: ``floor`` is, per seed, three
times the statistic's fluctuation about a linear trend over the last quarter of the run plus what that trend still
moves over the quarter (SGD noise, evaluation error and unfinished convergence), and the median over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ptforget.check import rules
from ptforget.check.context import Context
from ptforget.check.gates import plateau
from ptforget.check.registry import Explanation
from ptforget.check.runs import Result, Run, RunSpec
from ptforget.stats import summarize
from ptforget.tasks import TwoModeTask

#: the 1-D task of the per-family claims (whitening reduces the theory's d-dimensional task to this axis)
D1 = ("task.dim=1", "task.beta_star=0.5", "task.new_offset=1")


def task_of(ctx: Context, spec: RunSpec) -> TwoModeTask:
    """The task of a spec's composed config (cheap: no generator is built)."""
    from ptforget.build import instantiate_group

    return instantiate_group(ctx.config(spec).task, "task")


def region_of(task: TwoModeTask, parts: Sequence[tuple[float, str]]) -> dict[str, float]:
    """Exact region view of a mixture of the task's modes: ``parts`` = [(weight, 'old' | 'new' | 'q0_new')].

    Returns the old-region mass and the drift of its old-region conditional mean from p*'s.
    """
    from ptforget.generators.base import region_stats
    from ptforget.metrics import target_region_stats

    loc = {"old": task.mu_old, "new": task.mu_new, "q0_new": task.mu_new_init}
    w = torch.tensor([p[0] for p in parts], dtype=torch.float32)
    mu = torch.stack([loc[p[1]] for p in parts])
    st = region_stats(w, mu, task.cov.expand(len(parts), task.dim, task.dim), task)
    _, ref, _ = target_region_stats(task)
    return {"mass": float(st["region_mass"]), "drift": float(torch.linalg.norm(st["region_mean"] - ref)),
            "core": float(st["core_pos"])}


def target_core(task: TwoModeTask) -> float:
    """p*'s old-core location (``core_pos`` of the target): the reference of the core drift."""
    return region_of(task, [(task.beta_star, "old"), (1 - task.beta_star, "new")])["core"]


def core_excursion(ref: float) -> Callable[[Run], float]:
    """A statistic: the largest increase over the run of the old core's distance from p*'s, |core_pos - ref|.

    It is the old mode's drift caused during the run; a model that starts misplaced (a neural fit of q0) and is
    pulled toward p* contributes nothing, and for a Gaussian old mode it is a fixed fraction (about 0.25) of the old
    mean's drift, so scaling laws in Delta are read off it unchanged."""

    def stat(r: Run) -> float:
        dev = np.abs(r.col("core_pos") - ref)
        return float(np.nanmax(dev) - dev[0])

    return stat


MIXTURES = ("gmm", "mdn")


def drift_stat(ctx: Context, spec: RunSpec) -> tuple[Callable[[Run], float], str]:
    """(statistic, its name) of the old mode's drift in a run: the sup of ||mu_o - mu_o*|| for the mixture families
    (their component view is exact), the core excursion for the others (no components to read)."""
    if spec.family in MIXTURES:
        return sup("comp_drift"), "sup ||mu_o - mu_o*||"
    return core_excursion(target_core(task_of(ctx, spec))), "old-core excursion"


def settled(ctx: Context, res: Result, key: str, rule: rules.Discrimination) -> dict:
    """Row keyword arguments for the final value of trajectory column ``key``: its sources and whether it reached
    its plateau (``gates.plateau`` at the rule's margin)."""
    ok, why = plateau(res.runs, key, rule.margin, ctx.gates())
    return {"converged": ok, "convergence": why, "sources": [res]}


def collapses(ctx: Context, values: Sequence[float], retained: float) -> list[bool]:
    """Per seed: the old mode was lost (final old mass below ``profile.forgetting_threshold`` x the mass the theory
    says is retained: paper D1's threshold) although the prediction retains it: a discrete outcome, reported as a
    rate, not averaged into the retained mass."""
    thr = float(ctx.profile.forgetting_threshold) * retained
    return [float(v) < thr for v in values]


def q0_mass(task: TwoModeTask) -> float:
    """q0's old-region mass (the 'nothing moves' rival of the mass claims)."""
    return region_of(task, [(float(task.beta0), "old"), (1 - float(task.beta0), "q0_new")])["mass"]


def start_gap(start: float, pred: float) -> float:
    """The distance a run must travel from its start to the prediction (``rules.resolution``'s ``gap``)."""
    return abs(float(start) - float(pred))


def late_floor(steps: np.ndarray, values: np.ndarray, frac: float = 0.25) -> float:
    """3 x the fluctuation about a linear trend over the last ``frac`` of a trajectory plus the trend's change."""
    keep = np.isfinite(values)
    t, v = steps[keep], values[keep]
    n = max(5, math.ceil(frac * len(t)))
    if len(t) < 5:
        return float("nan")
    t, v = t[-n:], v[-n:]
    coef = np.polyfit(t, v, 1)
    resid = v - np.polyval(coef, t)
    return float(3.0 * resid.std(ddof=2) + abs(coef[0]) * (t[-1] - t[0]))


def floor(res: Result, key: str) -> tuple[float, str]:
    """(tolerance, its reason) for a final value of trajectory column ``key``: the run's measured noise floor."""
    per = [late_floor(r.steps, r.col(key)) for r in res.runs]
    tol = float(np.nanmedian(per))
    return tol, ("noise floor measured on the run: 3 x the fluctuation about a linear trend over the last quarter, "
                 "plus the trend's change there (median over seeds)")


def sup(key: str):
    """A statistic: the largest value of a trajectory column over the run."""
    return lambda r: float(np.nanmax(r.col(key)))


def exact_spec(ctx: Context, label: str, delta: float, beta_star: float, h: float, steps: int, eval_every: int,
               *extra: str, batch: int | None = None) -> RunSpec:
    """A 1-D GMM reverse-KL run with plain SGD and a large enumerated batch: follows the exact population flow."""
    return RunSpec(label, "gmm", (
        "objective=rkl", "objective.estimator=enumerate", "optimizer=sgd", f"optimizer.lr={h}", "task.dim=1",
        f"task.delta={delta}", f"task.beta_star={beta_star}", "task.new_offset=1", f"trainer.max_steps={steps}",
        f"objective.batch={int(batch or ctx.profile.exact_batch)}", f"eval_every={eval_every}", *extra))


def gmm_at(run: Run, delta: float, beta_star: float, row: int = -1):
    """The 1-D GMM and task a run had at trajectory row ``row`` (its weight and component means are recorded)."""
    from ptforget.generators import GaussianMixture

    task = TwoModeTask(dim=1, delta=delta, beta_star=beta_star)
    gen = GaussianMixture(task)
    w = float(np.clip(run.col("weight")[row], 1e-12, 1 - 1e-12))
    with torch.no_grad():
        gen.weight_param.fill_(math.log(w / (1 - w)))
        gen.mu_old.fill_(float(run.col("mu_old_0")[row]))
        gen.mu_rest.fill_(float(run.col("mu_new_0")[row]))
    return gen, task


def _show(s) -> str:
    return f"{s.mean:.4g}" + (f" [{s.lo:.4g}, {s.hi:.4g}]" if s.has_interval else "") + f" (n={s.n})"


def control_spec(spec: RunSpec, suffix: str, *extra: str) -> RunSpec:
    """The spec with more overrides (later ones win), as a control run."""
    return RunSpec(f"{spec.label}_{suffix}", spec.family, (*spec.overrides, *extra), spec.seeds)


def started_at_prediction(spec: RunSpec, start: Sequence[str], key: str, pred: float) -> Explanation:
    """Control: the same run started at the predicted fixed point. If it stays there (within its noise floor),
    the prediction is a fixed point of the trained dynamics and the run from the off-prediction start did not
    reach it; if it moves away, the family settles elsewhere."""
    ctrl = control_spec(spec, "from_prediction", *start)

    def describe(got: dict[RunSpec, Result]) -> str:
        res = got[ctrl]
        s = summarize(res.values(key))
        tol, _ = floor(res, key)
        stays = s.has_interval and pred - tol <= s.lo and s.hi <= pred + tol
        tail = ("it stays there: the prediction is a fixed point the run from its own start did not reach"
                if stays else "it moves away: this family does not settle at the prediction")
        return f"started at the prediction ({', '.join(start)}), the same run ends at {key} {_show(s)}; {tail}."

    return Explanation([ctrl], describe)


def longer_run(spec: RunSpec, steps: int, key: str, predicted_at: float | None = None,
               stat: Callable[[Run], float] | None = None, target: float | None = None) -> Explanation:
    """Control: the same run with ``steps`` optimizer steps (did the run not converge, or does it settle
    elsewhere?); ``predicted_at`` is the prediction at that length, when the law is time-dependent. With the
    row's own prediction ``target`` the text says whether the error against the prediction shrank with the
    longer run (beyond both intervals' half-widths): not converged, or settled elsewhere."""
    ctrl = control_spec(spec, f"T{steps}", f"trainer.max_steps={steps}")
    goal = predicted_at if predicted_at is not None else target

    def describe(got: dict[RunSpec, Result]) -> str:
        s = summarize(got[ctrl].values(stat or key))
        at = f" (predicted then: {predicted_at:.4g})" if predicted_at is not None else ""
        text = f"run {steps} steps instead, the same run ends at {key} {_show(s)}{at}"
        if target is None or goal is None or spec not in got:
            return text + "."
        s0 = summarize(got[spec].values(stat or key))
        if not (s.has_interval and s0.has_interval):
            return text + "."
        noise = (s.hi - s.lo) / 2 + (s0.hi - s0.lo) / 2
        before, after = abs(s0.mean - target), abs(s.mean - goal)
        if predicted_at is not None and target and goal:  # a time-dependent law: relative errors at both lengths
            rb, ra = before / abs(target), after / abs(goal)
            rn = (s.hi - s.lo) / 2 / abs(goal) + (s0.hi - s0.lo) / 2 / abs(target)
            trend = ("fell" if rb - ra > rn else "grew" if ra - rb > rn else "stayed")
            what = {"fell": "the run approaches the law", "grew": "the run departs from the law",
                    "stayed": "a steady mismatch of the law's value, not a slow convergence"}[trend]
            return f"{text}; its relative error against the law went from {rb:.1%} to {ra:.1%}: {what}."
        if before - after > noise:
            tail = (f"its error against the prediction fell from {before:.3g} to {after:.3g}: the run had not "
                    "converged at its length")
        elif after - before > noise:
            tail = f"its error against the prediction grew from {before:.3g} to {after:.3g}: it settles elsewhere"
        else:
            tail = f"its error against the prediction stayed at {after:.3g}: it settles where it is"
        return f"{text}; {tail}."

    return Explanation([ctrl, spec] if target is not None else [ctrl], describe, continues={spec: ctrl})
