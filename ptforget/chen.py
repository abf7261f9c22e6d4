"""Chen et al. (2025)'s two-mode simulations, reproduced from their description (docs/theory.md), every seed of a
run in one batched loop.

Target p = 0.75 N(-3, 1) + 0.25 N(3.5, 0.7^2) (old mode left, new mode right), plain SGD on direct parameters,
1000 Monte-Carlo samples per iteration.

* **Bi-modal** (``TwoModeSetting``): q = pi1 N(mu1, s1^2) + (1 - pi1) N(mu2, s2^2), initialised at
  0.75 N(-3.5, 1) + 0.25 N(0.5, 0.7^2); the old component's step (pi1, mu1, s1) is multiplied by the slow factor
  0.005; pi1 is clipped to [1e-3, 1 - 1e-3] and scales to >= 1e-3 after each step; 200 iterations.
  ``fkl``: SFT on samples of the new target component, loss -mean log q. ``reinforce``: samples from the model's
  *new component only*, reward r = log N(x; 3.5, 0.7) - log(beta (1 - pi1) N(x; mu2, s2)), importance weight
  q(x) / ((1 - pi1) N(x; mu2, s2)), ascent on mean(r IS grad log q), no baseline (as in their code).
* **Uni-modal** (``SingleModeSetting``): q = N(mu, s^2) initialised at N(-3.5, 1), 1000 iterations. ``fkl`` on
  new-component samples (lr 0.05); ``reinforce`` with samples of q, reward log(p_new(x) / (beta q(x))), no IS
  (lr 0.005): an exact score-function estimate of -grad KL(q || p_new).

Metrics: component-wise overlap accuracy Acc_k = int min(a*_k p_k, q_k) / a*_k on a grid (trapezoid rule), with
q_k the weighted model component (bi-modal) or the whole model (uni-modal); gain = Acc_new(t) - Acc_new(0),
drop = Acc_old(0) - Acc_old(t); a run is read at the first iteration with gain >= the threshold (or its last).
Chen's code draws every run from one shared random stream, so seeds here are compared in distribution.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ptforget.errors import check, check_choice

TARGET = {"weight_old": 0.75, "mu_old": -3.0, "sigma_old": 1.0, "mu_new": 3.5, "sigma_new": 0.7}
SETTINGS: dict[str, dict[str, Any]] = {
    "bimodal": {"init": {"weight_old": 0.75, "mu_old": -3.5, "sigma_old": 1.0, "mu_new": 0.5, "sigma_new": 0.7},
                "iterations": 200, "grid": [-8.0, 8.0, 500],
                "runs": [{"method": "fkl", "lr": 0.15}, {"method": "fkl", "lr": 0.01},
                         {"method": "reinforce", "lr": 0.01}]},
    "unimodal": {"init": {"mu": -3.5, "sigma": 1.0}, "iterations": 1000, "grid": [-10.0, 10.0, 500],
                 "runs": [{"method": "fkl", "lr": 0.05}, {"method": "reinforce", "lr": 0.005}]},
}
DEFAULTS: dict[str, Any] = {"target": TARGET, "samples": 1000, "slow_factor": 0.005, "reinforce_beta": 0.1,
                            "gain_threshold": 0.9, "seeds": 10, "seed": 0, "settings": SETTINGS}


def _log_normal(x: torch.Tensor, mu: torch.Tensor | float, s: torch.Tensor | float) -> torch.Tensor:
    s = torch.as_tensor(s, dtype=x.dtype)
    return -0.5 * ((x - mu) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)


def _dens(grid: np.ndarray, w: np.ndarray, mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(S, n) weighted normal densities of S seeds on the grid."""
    z = (grid[None] - mu[:, None]) / s[:, None]
    return w[:, None] * np.exp(-0.5 * z**2) / (s[:, None] * math.sqrt(2 * math.pi))


def overlap_accuracy(model_old: tuple, model_new: tuple, target: dict[str, float], grid: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(Acc_old, Acc_new) per seed; each model part is (weights, means, scales) arrays over seeds."""
    out = []
    for k, part in (("old", model_old), ("new", model_new)):
        tw = target["weight_old"] if k == "old" else 1 - target["weight_old"]
        p = tw * np.exp(-0.5 * ((grid - target[f"mu_{k}"]) / target[f"sigma_{k}"]) ** 2) / (
            target[f"sigma_{k}"] * math.sqrt(2 * math.pi))
        q = _dens(grid, *(np.asarray(a, float) for a in part))
        out.append(np.trapezoid(np.minimum(p[None], q), grid, axis=1) / np.trapezoid(p, grid))
    return out[0], out[1]


def simulate(setting: str, method: str, lr: float, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run (all seeds at once); returns per-seed trajectories of gain and drop and the reading at threshold."""
    c = {**DEFAULTS, **(cfg or {})}
    check_choice(setting, "chen2025.setting", tuple(SETTINGS))
    check_choice(method, "chen2025.method", ("fkl", "reinforce"))
    check(lr > 0 and math.isfinite(lr), "chen2025.lr", lr, "a finite number > 0")
    st = {**SETTINGS[setting], **c["settings"].get(setting, {})}
    t, S, n = c["target"], int(c["seeds"]), int(c["samples"])
    g = torch.Generator().manual_seed(int(c["seed"]))
    grid = np.linspace(*st["grid"][:2], int(st["grid"][2]))
    bimodal = setting == "bimodal"
    names = ("weight_old", "mu_old", "sigma_old", "mu_new", "sigma_new") if bimodal else ("mu", "sigma")
    th = {k: torch.full((S,), float(st["init"][k]), dtype=torch.float64, requires_grad=True) for k in names}
    slow = {"weight_old", "mu_old", "sigma_old"} if bimodal else set()

    def log_q(x: torch.Tensor) -> torch.Tensor:
        if not bimodal:
            return _log_normal(x, th["mu"][:, None], th["sigma"][:, None])
        a = torch.log(th["weight_old"])[:, None] + _log_normal(x, th["mu_old"][:, None], th["sigma_old"][:, None])
        b = torch.log1p(-th["weight_old"])[:, None] + _log_normal(x, th["mu_new"][:, None], th["sigma_new"][:, None])
        return torch.logaddexp(a, b)

    def parts() -> tuple[tuple, tuple]:
        p = {k: v.detach().numpy() for k, v in th.items()}
        if not bimodal:
            whole = (np.ones(S), p["mu"], p["sigma"])
            return whole, whole
        return ((p["weight_old"], p["mu_old"], p["sigma_old"]),
                (1 - p["weight_old"], p["mu_new"], p["sigma_new"]))

    acc0 = overlap_accuracy(*parts(), t, grid)
    gain, drop = [], []
    beta = float(c["reinforce_beta"])
    for it in range(int(st["iterations"]) + 1):
        acc = overlap_accuracy(*parts(), t, grid)
        gain.append(acc[1] - acc0[1])
        drop.append(acc0[0] - acc[0])
        if it == int(st["iterations"]):
            break
        eps = torch.randn(S, n, generator=g, dtype=torch.float64)
        if method == "fkl":
            loss = -log_q(t["mu_new"] + t["sigma_new"] * eps).mean(1).sum()
        elif bimodal:
            with torch.no_grad():
                x = th["mu_new"][:, None] + th["sigma_new"][:, None] * eps
                log_q2 = torch.log1p(-th["weight_old"])[:, None] + _log_normal(x, th["mu_new"][:, None],
                                                                               th["sigma_new"][:, None])
                reward = _log_normal(x, t["mu_new"], t["sigma_new"]) - math.log(beta) - log_q2
                iw = torch.exp(log_q(x) - log_q2)
            loss = -(reward * iw * log_q(x)).mean(1).sum()  # ascent on mean(r IS grad log q)
        else:
            with torch.no_grad():
                x = th["mu"][:, None] + th["sigma"][:, None] * eps
                reward = _log_normal(x, t["mu_new"], t["sigma_new"]) - math.log(beta) - log_q(x)
            loss = -(reward * log_q(x)).mean(1).sum()
        grads = torch.autograd.grad(loss, list(th.values()))
        with torch.no_grad():
            for (k, v), gk in zip(th.items(), grads, strict=True):
                v -= lr * (c["slow_factor"] if k in slow else 1.0) * gk
            if bimodal:
                th["weight_old"].clamp_(1e-3, 1 - 1e-3)
            for k in th:
                if k.startswith("sigma"):
                    th[k].clamp_(min=1e-3)
    gains, drops = np.array(gain), np.array(drop)  # (iterations + 1, S)
    reached = gains >= float(c["gain_threshold"])
    stop = np.where(reached.any(0), reached.argmax(0), len(gains) - 1)
    cols = np.arange(S)
    return {"setting": setting, "method": method, "lr": lr, "gain": gains, "drop": drops, "stop": stop,
            "reached": reached.any(0), "gain_at_stop": gains[stop, cols], "drop_at_stop": drops[stop, cols],
            "initial_acc": {"old": float(acc0[0][0]), "new": float(acc0[1][0])}}


def run_all(cfg: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every run of both settings (Chen's panels), each over ``seeds`` seeds."""
    c = {**DEFAULTS, **(cfg or {})}
    out = []
    for setting in SETTINGS:
        st = {**SETTINGS[setting], **c["settings"].get(setting, {})}
        out += [simulate(setting, r["method"], float(r["lr"]), c) for r in st["runs"]]
    return out
