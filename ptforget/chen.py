"""Chen et al. (2025) two-mode simulation, reproduced from its description (methods.md §1.3).

Target 0.75 N(-3, 1) + 0.25 N(3.5, 0.7^2); model pi1 N(mu1, s1^2) + (1 - pi1) N(mu2, s2^2) initialised at
0.75 N(-3.5, 1) + 0.25 N(0.5, 0.7^2); plain SGD on the *direct* parameters (pi1, mu1, s1, mu2, s2) with the
old-component step (pi1, mu1, s1) multiplied by the slow factor 0.005; 1000 Monte-Carlo samples per iteration;
after each step pi1 is clipped to [1e-3, 1 - 1e-3] and scales to >= 1e-3.

* ``fkl``: SFT on samples of the new target component only, loss -mean log q.
* ``reinforce``: Chen's "RL": samples from the model's *new component only*, reward
  r = log N(x; 3.5, 0.7) - log(beta (1 - pi1) N(x; mu2, s2)), importance weight q(x) / ((1 - pi1) N(x; mu2, s2)),
  ascent on mean(r IS grad log q) with no baseline (as in their code, despite its docstring).

Metrics: component-wise overlap accuracy Acc_k = int min(a*_k p_k, w_k q_k) / int a*_k p_k on a 500-point grid
on [-8, 8] (trapezoid rule), gain = Acc_new(t) - Acc_new(0), drop = Acc_old(0) - Acc_old(t); a run is read at
the first iteration with gain >= the threshold (or at the last iteration).

This runs as its own loop, not through the training path, because Chen's setting has unequal component
variances trained directly, outside the equal-covariance task and the log-scale parametrisation of
GaussianMixture. Gradients come from autograd on the same losses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ptforget.errors import check, check_choice

DEFAULTS: dict[str, Any] = {
    "target": {"weight_old": 0.75, "mu_old": -3.0, "sigma_old": 1.0, "mu_new": 3.5, "sigma_new": 0.7},
    "init": {"weight_old": 0.75, "mu_old": -3.5, "sigma_old": 1.0, "mu_new": 0.5, "sigma_new": 0.7},
    "iterations": 200,
    "samples": 1000,
    "slow_factor": 0.005,
    "reinforce_beta": 0.1,
    "gain_threshold": 0.9,
    "grid": [-8.0, 8.0, 500],
    "runs": [{"method": "fkl", "lr": 0.15}, {"method": "fkl", "lr": 0.01}, {"method": "reinforce", "lr": 0.01}],
    "seed": 0,
}


def _log_normal(x: torch.Tensor, mu: torch.Tensor | float, s: torch.Tensor | float) -> torch.Tensor:
    s = torch.as_tensor(s, dtype=x.dtype)
    return -0.5 * ((x - mu) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)


def overlap_accuracy(params: dict[str, float], target: dict[str, float], grid: np.ndarray) -> tuple[float, float]:
    """(Acc_old, Acc_new): component-wise overlap of the weighted model and target components."""

    def dens(w: float, mu: float, s: float) -> np.ndarray:
        return w * np.exp(-0.5 * ((grid - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    out = []
    for k, wk in (("old", "weight_old"), ("new", None)):
        tw = target["weight_old"] if wk else 1 - target["weight_old"]
        mw = params["weight_old"] if wk else 1 - params["weight_old"]
        p = dens(tw, target[f"mu_{k}"], target[f"sigma_{k}"])
        q = dens(mw, params[f"mu_{k}"], params[f"sigma_{k}"])
        out.append(float(np.trapezoid(np.minimum(p, q), grid) / np.trapezoid(p, grid)))
    return out[0], out[1]


def simulate(method: str, lr: float, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run; returns the per-iteration trajectory and the reading at the gain threshold."""
    c = {**DEFAULTS, **(cfg or {})}
    check_choice(method, "chen2025.method", ("fkl", "reinforce"))
    check(lr > 0 and math.isfinite(lr), "chen2025.lr", lr, "a finite number > 0")
    t, init = c["target"], c["init"]
    g = torch.Generator().manual_seed(int(c["seed"]))
    th = {k: torch.tensor(float(init[k]), dtype=torch.float64, requires_grad=True)
          for k in ("weight_old", "mu_old", "sigma_old", "mu_new", "sigma_new")}
    slow = {"weight_old", "mu_old", "sigma_old"}
    grid = np.linspace(*c["grid"][:2], int(c["grid"][2]))
    n = int(c["samples"])

    def log_q(x: torch.Tensor) -> torch.Tensor:
        a = torch.log(th["weight_old"]) + _log_normal(x, th["mu_old"], th["sigma_old"])
        b = torch.log1p(-th["weight_old"]) + _log_normal(x, th["mu_new"], th["sigma_new"])
        return torch.logaddexp(a, b)

    def snapshot() -> dict[str, float]:
        return {k: float(v.detach()) for k, v in th.items()}

    traj = []
    acc0 = overlap_accuracy(snapshot(), t, grid)
    for it in range(int(c["iterations"]) + 1):
        p = snapshot()
        acc = overlap_accuracy(p, t, grid)
        traj.append({"iteration": it, **p, "acc_old": acc[0], "acc_new": acc[1], "gain": acc[1] - acc0[1],
                     "drop": acc0[0] - acc[0]})
        if it == int(c["iterations"]):
            break
        if method == "fkl":
            x = t["mu_new"] + t["sigma_new"] * torch.randn(n, generator=g, dtype=torch.float64)
            loss = -log_q(x).mean()
        else:
            with torch.no_grad():
                x = th["mu_new"] + th["sigma_new"] * torch.randn(n, generator=g, dtype=torch.float64)
                log_q2 = torch.log1p(-th["weight_old"]) + _log_normal(x, th["mu_new"], th["sigma_new"])
                reward = _log_normal(x, t["mu_new"], t["sigma_new"]) - math.log(c["reinforce_beta"]) - log_q2
                iw = torch.exp(log_q(x) - log_q2)
            loss = -(reward * iw * log_q(x)).mean()  # gradient ascent on mean(r IS grad log q)
        grads = torch.autograd.grad(loss, list(th.values()))
        with torch.no_grad():
            for (k, v), gk in zip(th.items(), grads, strict=True):
                v -= lr * (c["slow_factor"] if k in slow else 1.0) * gk
            th["weight_old"].clamp_(1e-3, 1 - 1e-3)
            th["sigma_old"].clamp_(min=1e-3)
            th["sigma_new"].clamp_(min=1e-3)
    gains = np.array([r["gain"] for r in traj])
    hit = np.nonzero(gains >= float(c["gain_threshold"]))[0]
    stop = int(hit[0]) if hit.size else len(traj) - 1
    return {"method": method, "lr": lr, "trajectory": traj, "stop": stop, "reached": bool(hit.size),
            "at_stop": traj[stop], "initial_acc": {"old": acc0[0], "new": acc0[1]}}


def run_all(cfg: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every run of the experiment (Chen's three panels by default)."""
    c = {**DEFAULTS, **(cfg or {})}
    return [simulate(r["method"], float(r["lr"]), c) for r in c["runs"]]
