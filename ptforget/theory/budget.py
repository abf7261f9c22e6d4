"""Resource estimates of ``ptforget-theory``'s predictions, so that the command line can refuse a config that would
run for hours or fill the memory before anything is computed."""

from __future__ import annotations

import math
from typing import Any

from .config import TheoryConfig
from .population import ORDER, PANEL, TAIL, contraction_factor


def direct_steps(cfg: TheoryConfig) -> int:
    """Steps of P2's direct-weight flow: three predicted hitting times, at least the run's steps."""
    b0, h = float(cfg.beta0), cfg.lr * cfg.mult["weight"]
    return max(cfg.steps, int(3 * (b0 - b0**2 / 2) / h) + 10) if h > 0 else cfg.steps


#: seconds per population-flow step: a fixed cost and a cost per quadrature node (measured on a laptop core,
#: rounded up: the estimate errs on the long side)
STEP_S, NODE_S = 3e-5, 1e-7
#: bytes a flow keeps per recorded step (six Python float lists, then six arrays)
RECORD_BYTES = 6 * 40


def _flow_nodes(delta: float, new_offset: float) -> int:
    """Quadrature nodes of a flow's grid: the span of the means and targets plus TAIL on each side."""
    lo, hi = min(0.0, delta - new_offset, delta), max(0.0, delta - new_offset, delta)
    return math.ceil((hi - lo + 2 * TAIL) / PANEL) * ORDER


def theory_budget(cfg: TheoryConfig) -> dict[str, Any]:
    """Estimated seconds and peak bytes of ``all_predictions(cfg)``, and the TheoryConfig field that drives each.

    Mirrors the claims' loops: every population flow (steps x quadrature nodes), the (1 + 2 dim)^2 Fisher and
    Hessian matrices and their eigenvalues, and the logistic-normal quadratures of the misassignment. Cheap: no
    prediction is computed.
    """
    nodes = _flow_nodes(cfg.delta, cfg.new_offset)
    flows: list[tuple[str, int, int, int]] = []  # (driver field, steps, record_every, nodes)
    flows += [("steps", cfg.steps, 1, nodes)] * 6  # P1, P2 (logit), P4, P5, P6 and P11's reference
    direct = direct_steps(cfg)
    flows.append(("lr" if direct > cfg.steps else "steps", direct, 1, nodes))  # P2 (direct)
    flows.append(("steps", max(cfg.steps, 20000), 1, nodes))  # P7
    # P10 and P11 run one flow per grid entry: beyond the default grid sizes the grid is what costs
    flows += [("steps" if i < 5 else "delta_grid", cfg.steps, 1, _flow_nodes(d, cfg.new_offset))
              for i, d in enumerate(cfg.delta_grid)]
    for i, b in enumerate(cfg.beta_star_grid):  # P11: the exact flow and the quasi-static equilibrium
        flows.append(("steps" if i < 3 else "beta_star_grid", cfg.steps, 1, nodes))
        q = math.ceil(40.0 / b)
        flows.append(("beta_star_grid", q, q, nodes))
    time_by: dict[str, float] = {}
    mem_by: dict[str, float] = {}
    for field_name, steps, every, n in flows:
        time_by[field_name] = time_by.get(field_name, 0.0) + (steps + 1) * (STEP_S + NODE_S * n)
        mem_by[field_name] = max(mem_by.get(field_name, 0.0), (steps // every + 2) * RECORD_BYTES + 16 * 8 * n)
    n = 1 + 2 * cfg.dim  # P7/P8: Fisher, Hessian and their difference; eigenvalues are O(n^3)
    time_by["dim"] = 4 * 2e-9 * n**3
    mem_by["dim"] = 8 * 8.0 * n * n
    s = cfg.delta  # misassignment quadrature (P3, P4, P9): panels narrower than pi / s over [-13, s + 13]
    logistic = 16 * math.ceil((s + 26.0) / min(0.5, math.pi / max(s, 1e-12)))
    time_by["delta"] = 6 * 2e-8 * logistic
    mem_by["delta"] = 6 * 8.0 * logistic
    seconds, peak = sum(time_by.values()), max(mem_by.values())
    return {"seconds": seconds, "bytes": peak, "time_driver": max(time_by, key=time_by.get),
            "memory_driver": max(mem_by, key=mem_by.get)}


def max_stable_lr(cfg: TheoryConfig) -> float:
    """The largest gradient-descent step for which the exact flows stay stable near their optima, 2 / curvature.

    Curvature: the largest eigenvalue of the step-weighted Fisher at theta* (reverse KL) and the means' own
    curvature m / sigma^2 (forward KL pulls a mean onto its data with unit curvature in whitened units). A
    direct weight is clamped to [clip, 1 - clip] after every step, so its curvature does not count.
    """
    mult = cfg.mult
    curv = max(mult["old"], mult["new"]) / cfg.sigma**2
    if cfg.weight == "logit":
        curv = max(curv, mult["weight"] / 4.0)
    lr_mult = dict(mult) if cfg.weight == "logit" else {**mult, "weight": 0.0}
    if any(v > 0 for v in lr_mult.values()):
        c = contraction_factor(cfg.delta, cfg.beta_star, 1.0, cfg.weight, min(cfg.dim, 2), lr_mult, cfg.sigma)
        curv = max(curv, c["lambda_max"])
    return 2.0 / curv if curv > 0 else math.inf
