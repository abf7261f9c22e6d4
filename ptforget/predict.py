"""The theory's prediction for one trained run's exact config, in the metrics the run measured.

``ptforget-report <sweep> theory=true`` puts these beside the measurements (``predicted_<metric>`` columns and
dashed lines in the figures). A prediction is computed from the run's composed config through the same bridge as
``ptforget-theory`` and the check (``ptforget.bridge.theory_config``), and read in the run's own region view: the
old-region mass of p*'s Bayes region, the weight of the old component, and the drift of the old core from where it
started (``ptforget.metrics``), so prediction and measurement are the same number.

What is predicted (``basis``):

* ``gd``: forward / reverse KL (with or without replay) trained with plain SGD: the exact population gradient
  flow of the two-component GMM (``ptforget.theory.population_flow``) for the run's step, steps and start; its
  mixture at each recorded step is read in the region view. For a mixture-density network or a flow the same
  flow is the theory's prediction for the family-free region view.
* ``optimum``: the same objectives trained with Adam. The theory is one of gradient flow and SGD; Adam's
  per-coordinate normalisation changes the path, so only the optimum the objective drives to is predicted (p_new,
  p*, or the replay mixture) and the row is flagged ``adam`` instead of being predicted as gradient descent.
* ``law``: SDFT (anchored EMA teacher: the anchor's weight, R11), TTT-Discover (the KL-anchored fixed point,
  R12) and OAPL (beta_K after K lag refreshes, R13): the method's closed form with its config's parameters, the
  modes at their targets.

A config the theory does not cover (a full covariance, ``task.new_shift``, an SDFT ICL teacher, ...) gets NaN
predictions and a ``reason``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the measured metrics a prediction is given for (final values and the trajectory column of the figures)
PREDICTED = ("old_mass", "weight", "drift")
#: the theory's dynamics are gradient descent: optimizers it predicts step by step
GD_OPTIMIZERS = ("sgd",)


@dataclass
class RunPrediction:
    """Predicted final metrics, their trajectory (``steps`` and one array per metric) and how they were got."""

    final: dict[str, float]
    basis: str
    reason: str = ""
    steps: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The summary.csv columns: ``predicted_<metric>``, ``theory_basis`` and ``theory_note``."""
        out: dict[str, Any] = {f"predicted_{m}": self.final.get(m, math.nan) for m in PREDICTED}
        out["theory_basis"] = self.basis
        out["theory_note"] = self.reason
        return out


def no_prediction(reason: str) -> RunPrediction:
    """NaN predictions with the reason the theory does not cover a config."""
    return RunPrediction({m: math.nan for m in PREDICTED}, "none", reason)


def _region(task: Any, weights: np.ndarray, old: np.ndarray, new: np.ndarray) -> dict[str, np.ndarray]:
    """Region view of K two-component mixtures of the task's covariance: weights (K,), means along the mode axis
    in Mahalanobis units from mu_o* (K,) -> old-region mass (K,) and old-core location (K,)."""
    import torch

    from ptforget.generators.base import region_stats

    axis = (task.mu_new - task.mu_old) / max(float(task.delta), 1e-12)
    if float(task.delta) == 0:
        axis = torch.zeros_like(task.mu_old)
    w = torch.as_tensor(np.stack([weights, 1 - weights], -1), dtype=torch.float32)
    pos = torch.as_tensor(np.stack([old, new], -1), dtype=torch.float32)
    loc = task.mu_old + pos.unsqueeze(-1) * axis
    k = len(weights)
    st = region_stats(w, loc, task.cov.expand(k, 2, task.dim, task.dim), task)
    return {"old_mass": st["region_mass"].double().numpy(), "core": st["core_pos"].double().numpy()}


def predict_config(config: dict[str, Any], record_every: int | None = None) -> RunPrediction:
    """The theory's prediction for a run's resolved config (``summary["config"]``); never raises for a config the
    theory does not cover (NaN with a reason instead)."""
    from omegaconf import OmegaConf

    from ptforget.build import target_class
    from ptforget.errors import ConfigError
    from ptforget.tasks import TwoModeTask

    try:
        cfg = OmegaConf.create({k: v for k, v in config.items() if k != "hydra"})
        task = TwoModeTask(**{k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items()
                              if not str(k).startswith("_")})
    except Exception as err:
        return no_prediction(f"no task in the config ({type(err).__name__}: {err})")
    if task.new_shift:
        return no_prediction("task.new_shift moves q0's new mode off the axis: the two-mode flow does not cover it")
    from ptforget.bridge import theory_config

    try:
        tc = theory_config(cfg)
    except ConfigError as err:
        return no_prediction(f"the theory does not cover this config ({err})")
    obj_cls = target_class(cfg.objective)
    name = getattr(obj_cls, "name", str(cfg.objective.get("_target_", "?")))
    optimizer = str(cfg.optimizer.get("name", "adam"))
    every = int(record_every or cfg.get("eval_every", 50) or 50)
    if name in ("fkl", "rkl", "fkl_replay", "rkl_replay"):
        flow_obj = "fkl" if name.startswith("fkl") else "rkl"
        if optimizer not in GD_OPTIMIZERS:
            return _optimum(task, tc, flow_obj, optimizer)
        return _gd(task, tc, flow_obj, every)
    if name in ("sdft", "ttt_discover", "oapl"):
        return _law(task, tc, name, cfg)
    return no_prediction(f"objective {name}: no prediction of the theory")


def _gd(task: Any, tc: Any, objective: str, every: int) -> RunPrediction:
    try:
        r = tc.flow(objective, record_every=max(1, every))
    except (FloatingPointError, ValueError) as err:
        return no_prediction(f"the population flow does not run at this step ({err})")
    w = r["weight"]
    reg = _region(task, w, r["old_mean"], r["new_mean"])
    drift = np.abs(reg["core"] - reg["core"][0])
    curves = {"old_mass": reg["old_mass"].tolist(), "weight": w.tolist(), "drift": drift.tolist()}
    final = {m: float(v[-1]) for m, v in curves.items()}
    return RunPrediction(final, "gd", f"exact population GD of the GMM ({objective}, lr {tc.lr:g}, "
                                      f"{tc.steps} steps)", [int(s) for s in r["step"]], curves)


def _optimum(task: Any, tc: Any, objective: str, optimizer: str) -> RunPrediction:
    if objective == "rkl":
        w, what = tc.beta_star, "p*"
    elif tc.replay > 0 and tc.replay_source == "p_old":
        w, what = tc.replay, f"the replay mixture lam={tc.replay:g}"
    elif tc.replay > 0:
        return no_prediction(f"{optimizer}: replay from q0 has no optimizer-free optimum (its mixture moves with "
                             "the run)")
    else:
        w, what = 0.0, "p_new"
    reg = _region(task, np.array([w, tc.beta0]), np.zeros(2), np.array([tc.delta, tc.delta - tc.new_offset]))
    return RunPrediction({"old_mass": float(reg["old_mass"][0]), "weight": float(w), "drift": math.nan}, "optimum",
                         f"{optimizer}: the theory is gradient flow / SGD, so only the optimum ({what}) is "
                         "predicted, not the path; drift not predicted")


def _law(task: Any, tc: Any, name: str, cfg: Any) -> RunPrediction:
    from ptforget.theory.estimators import sdft_anchor_weight
    from ptforget.theory.methods import oapl_weight, ttt_fixed_point

    if name == "sdft":
        if cfg.objective.get("teacher", "anchor") != "anchor":
            return no_prediction("SDFT's ICL teacher: its law depends on the demonstrations, not predicted here")
        anchor = tc.beta_star if tc.sdft_anchor == "p_star" else 0.0
        alpha = float(cfg.objective.get("alpha_ema", 0.01))
        w = float(sdft_anchor_weight(int(tc.steps), float(tc.beta0), tc.sdft_lam, alpha, anchor)[-1])
        note = (f"SDFT anchored EMA teacher (R11, exact tracking): anchor {tc.sdft_anchor}, lam {tc.sdft_lam:g}, "
                f"alpha_ema {alpha:g}, {tc.steps} steps")
    elif name == "ttt_discover":
        w = ttt_fixed_point(tc.gamma, tc.lam, tc.reward_old, tc.reward_new, float(tc.beta_ref))
        note = f"TTT-Discover fixed point (R12): gamma {tc.gamma:g}, lam {tc.lam:g}"
    else:
        w = oapl_weight(float(tc.beta0), tc.refreshes, tc.reward_old, tc.reward_new, tc.tau)
        note = f"OAPL (R13): K={tc.refreshes} refreshes, tau {tc.tau:g}"
    reg = _region(task, np.array([w]), np.zeros(1), np.array([tc.delta]))
    return RunPrediction({"old_mass": float(reg["old_mass"][0]), "weight": float(w), "drift": 0.0}, "law",
                         note + "; modes at their targets")


# ---------------------------------------------------------------------------------------------- ptforget-theory
#: the claims whose predictions concern each objective (the overlap geometry, P9 and P17, concerns every one)
CLAIMS_BY_OBJECTIVE: dict[str, tuple[str, ...]] = {
    "fkl": ("P1", "P2", "P3", "P4"),
    "fkl_replay": ("P5",),
    "rkl": ("P6", "P7", "P8", "P10", "P11", "P13"),
    "rkl_replay": ("P12", "P13"),
    "sdft": ("P14",),
    "ttt_discover": ("P15",),
    "oapl": ("P16",),
}
GEOMETRY_CLAIMS = ("P9", "P17")


def objective_name(cfg: Any) -> str:
    """The objective's registered name (``fkl``, ``sdft``, ...) of a composed config."""
    from ptforget.build import target_class

    cls = target_class(cfg.objective)
    return str(getattr(cls, "name", cfg.objective.get("_target_", "?")))


def applicable_claims(cfg: Any) -> list[str] | None:
    """The claim ids ``ptforget-theory`` prints for ``cfg``: with ``claims: objective`` (the default) those of its
    objective and the overlap geometry; None otherwise (``all`` or the user's own list stands). An objective of a
    plugin, which no claim names, gets every claim."""
    if cfg.get("claims", "objective") != "objective":
        return None
    own = CLAIMS_BY_OBJECTIVE.get(objective_name(cfg))
    if own is None:
        from ptforget.check.registry import ordered

        return [c.id for c in ordered()]
    return [*own, *GEOMETRY_CLAIMS]


def config_lines(cfg: Any) -> list[str]:
    """The lines above ``ptforget-theory``'s table: which objective, optimizer and steps the numbers are for,
    what this run is predicted to measure (old-region mass, weight, core drift), and a warning when the
    optimizer is not the theory's (the step-dependent numbers below are then those of plain gradient descent)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    pred = predict_config({k: v for k, v in config.items() if k not in ("claims", "limits", "output")})
    name, opt = objective_name(cfg), str(cfg.optimizer.get("name", "adam"))
    vals = ", ".join(f"{m} {v:.4g}" for m, v in pred.final.items() if math.isfinite(v)) or "none"
    lines = [f"config: objective {name}, optimizer {opt}, {int(cfg.trainer.max_steps)} steps; "
             f"this run's predicted end values (region view): {vals} [{pred.basis}: {pred.reason}]"]
    if opt not in GD_OPTIMIZERS:
        lines.append(f"warning: optimizer={opt}: the theory is gradient flow / SGD; the step-dependent numbers "
                     "below are those of plain gradient descent at this lr, not of this run (fixed points apply)")
    return lines


def combined_row(cfg: Any, preds: list[Any], overrides: list[str]) -> dict[str, Any]:
    """One line of a ``ptforget-theory`` multirun's combined table: the job's overrides, the run-level prediction
    and every printed claim's quantities (``P1.predicted_final_weight``)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    row: dict[str, Any] = {"overrides": " ".join(overrides), "objective": objective_name(cfg)}
    pred = predict_config({k: v for k, v in config.items() if k not in ("claims", "limits", "output")})
    row.update(pred.columns())
    for p in preds:
        for n, v, _unit, _note in p.quantities:
            row[f"{p.claim}.{n}"] = v
    return row


def _claim_order(key: str) -> tuple:
    """P2.x before P10.x: claim number, then the quantity's name."""
    claim, _, rest = key.partition(".")
    num = claim[1:]
    return (int(num) if claim.startswith("P") and num.isdigit() else 10**6, claim, rest)


def write_combined(sweep_dir: Any, row_file: str = "theory_row.json") -> Any:
    """Rewrite ``predictions.csv`` in a multirun's folder from every job's ``theory_row.json`` (under a lock, so
    parallel jobs never interleave; the last job leaves the whole table). Returns its path."""
    import csv
    import io
    import json
    from pathlib import Path

    from ptforget.io import atomic_write_text, file_lock

    root = Path(sweep_dir)
    out = root / "predictions.csv"
    with file_lock(root / ".predictions.lock"):
        rows = []
        for path in sorted(root.glob(f"*/{row_file}"), key=lambda p: (len(p.parent.name), p.parent.name)):
            try:
                rows.append({"job": path.parent.name, **json.loads(path.read_text(encoding="utf-8"))})
            except (OSError, ValueError):
                continue
        lead = ["job", "overrides", "objective", *(f"predicted_{m}" for m in PREDICTED), "theory_basis",
                "theory_note"]
        columns = list(dict.fromkeys([*lead, *sorted({k for r in rows for k in r}, key=_claim_order)]))
        buf = io.StringIO()
        w = csv.DictWriter(buf, columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    return out


# ---------------------------------------------------------------------------------------------- theory gap
def theory_gap(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """How far a finished run is from the theory: measured and predicted final old-region mass (the mean over the
    run's seeds) and ``theory_gap`` = |measured - predicted| (NaN, with the basis saying why, when the theory does
    not predict this config). The scalar ``optimized_metric=theory_gap`` returns to Hydra's Optuna sweeper."""
    members = summary.get("members") or [summary]
    finals = [float((m.get("final") or {}).get("old_mass", math.nan)) for m in members]
    finals = [v for v in finals if math.isfinite(v)]
    measured = sum(finals) / len(finals) if finals else math.nan
    pred = predict_config({k: v for k, v in config.items() if k not in ("seed", "seeds")})
    predicted = pred.final.get("old_mass", math.nan)
    return {"theory_gap": abs(measured - predicted), "measured_old_mass": measured,
            "predicted_old_mass": predicted, "theory_basis": pred.basis, "theory_note": pred.reason}
