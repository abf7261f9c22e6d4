"""Gates: the premises a theory row's runs must meet before the row is judged.

A prediction of the theory is about a model that starts at q0, can represent its target and is read at a plateau.
Each gate here reads only the runs' own files and the profile's thresholds (``profile.gates``), and returns the
reason it failed (the row is then *untestable* or *not converged*) or None.

* **start**: every seed's start is q0: KL(q0 || start) <= ``start_kl`` nats (quadrature in 1-D; Monte Carlo with
  two standard errors of slack otherwise) and its old-region mass within ``start_old_mass_rel`` of q0's (relative).
  Measured by the run before its first step (``metrics.start_fidelity``, ``summary.json``'s ``start``).
* **plateau**: the statistic's linear trend over the last quarter of the run moves it by less than
  ``plateau_fraction`` x the row's margin (a criterion fixed with the margin, before the run); a sup over the run
  (the drift rows) must be reached before the last quarter (``claims.reverse_kl.sup_reached``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ptforget.check.runs import Result, Run

#: defaults of ``profile.gates`` (thresholds with their reasons in conf/profile/*.yaml)
DEFAULTS = {"start_kl": 0.01, "start_old_mass_rel": 0.01, "plateau_fraction": 0.1}


def thresholds(profile: Any) -> dict[str, float]:
    got = dict(profile.get("gates") or {}) if profile is not None else {}
    return {k: float(got.get(k, v)) for k, v in DEFAULTS.items()}


def start_record(res: Result, th: dict[str, float]) -> dict[str, Any]:
    """The start gate of one result (all its seeds): the fidelity row of the report, with ``passes`` and ``why``."""
    starts = [r.summary.get("start") for r in res.runs]
    fam = res.spec.family
    if not starts or any(not isinstance(s, dict) for s in starts):
        return {"family": fam, "config": res.spec.label, "n": len(starts), "kl_max": math.nan, "method": "–",
                "old_mass": math.nan, "old_mass_q0": math.nan, "passes": False,
                "why": "start not measured (a run from before the start gate: retrain it)"}
    kl = max(float(s["kl_q0"]) - 2 * float(s.get("kl_q0_se", 0.0)) for s in starts)
    kl_max = max(float(s["kl_q0"]) for s in starts)
    q0 = float(starts[0]["old_mass_q0"])
    worst = max(starts, key=lambda s: abs(float(s["old_mass"]) - q0))
    rel = abs(float(worst["old_mass"]) - q0) / max(q0, 1e-12)
    why = []
    if kl > th["start_kl"]:
        why.append(f"KL(q0 || start) = {kl_max:.3g} > {th['start_kl']:g} nats")
    if rel > th["start_old_mass_rel"]:
        why.append(f"start's old mass {float(worst['old_mass']):.4g} vs q0's {q0:.4g} "
                   f"({rel:.1%} > {th['start_old_mass_rel']:.0%})")
    return {"family": fam, "config": res.spec.label, "n": len(starts), "kl_max": kl_max,
            "method": starts[0].get("method", ""), "old_mass": float(np.mean([float(s["old_mass"]) for s in starts])),
            "old_mass_q0": q0, "passes": not why, "why": "; ".join(why)}


def start_gate(results: Iterable[Result], th: dict[str, float]) -> tuple[str | None, list[dict[str, Any]]]:
    """(the first failure over ``results``, or None; their fidelity records)."""
    recs = [start_record(r, th) for r in results]
    bad = [r for r in recs if not r["passes"]]
    return (f"start is not q0 ({bad[0]['config']}: {bad[0]['why']})" if bad else None), recs


def trend_change(steps: np.ndarray, values: np.ndarray, frac: float = 0.25) -> float:
    """What the least-squares linear trend over the last ``frac`` of a trajectory moves it by over that stretch."""
    keep = np.isfinite(values)
    t, v = steps[keep], values[keep]
    n = max(3, math.ceil(frac * len(t)))
    if len(t) < 3:
        return math.nan
    t, v = t[-n:], v[-n:]
    return float(abs(np.polyfit(t, v, 1)[0]) * (t[-1] - t[0]))


def plateau(runs: Sequence[Run], key: str, margin: float, th: dict[str, float]) -> tuple[bool, str]:
    """(converged, the criterion as measured) for the final value of trajectory column ``key``: the median over
    seeds of the last quarter's trend change below ``plateau_fraction`` x the margin."""
    ch = float(np.nanmedian([trend_change(r.steps, r.col(key)) for r in runs])) if runs else math.nan
    lim = th["plateau_fraction"] * margin
    ok = math.isfinite(ch) and ch <= lim
    return ok, (f"{key} moved {ch:.3g} over the last quarter (trend, median over seeds); the plateau criterion is "
                f"<= {th['plateau_fraction']:g} x the margin = {lim:.3g}")
