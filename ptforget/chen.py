"""Chen et al. (2025)'s two-mode simulations, every seed of a run in one batched loop, in two variants:
``faithful=false`` follows their description (docs/chen2025.md), ``faithful=true`` adds the numerical details of
their code (``princeton-pli/retaining-by-doing``, ``simulation/run.py`` and ``run_single_mode.py``) that the
description leaves out. ``faithful`` may also list some of the details, to measure each one alone.

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

The details of their code (``DETAILS``; docs/chen2025.md measures what each one changes):

* ``reward_floor``: the reward is log(p_new / (beta q) + 1e-12), so it never falls below log 1e-12 = -27.6. Where
  the model sits far from the new mode (the uni-modal start: p_new / q ~ 1e-21 at x = -3.5) every sample gets the
  same floored reward and the score-function gradient loses the pull of the far samples.
* ``density_floor``: 1e-12 is added to the model density wherever it divides: q + 1e-12 in the uni-modal reward,
  the importance weight (q + 1e-12) / (q_new + 1e-12), and the responsibilities of the hand-written gradients:
  the bi-modal SFT gradient is that of log(q + 1e-12), the RL score weighs the new component by
  (q_new + 1e-12) / (q + 1e-12). A far-right sample of p_new, where q < 1e-12, loses most of its pull.
* ``numpy_stream``: samples come from NumPy's legacy Mersenne Twister, ``x = loc + scale * standard_normal``;
  seed k of a run draws from RandomState(seed + k), and the runs of a setting share that stream in their listed
  order (a run starts after the iterations x samples draws of the runs before it), as their script's single
  ``np.random.seed(0)`` does. Seed 0 is then their published run, draw for draw; otherwise seeds are independent
  torch streams and are compared in distribution.

Metrics: component-wise overlap accuracy Acc_k = int min(a*_k p_k, q_k) / a*_k on a grid (trapezoid rule), with
q_k the weighted model component (bi-modal) or the whole model (uni-modal); gain = Acc_new(t) - Acc_new(0),
drop = Acc_old(0) - Acc_old(t); a run is read at the first iteration (= number of updates) with gain >= the
threshold (or its last). Their lists start after the first update, so their index of the same state is one less.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ptforget.errors import check, check_choice, is_int

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
                            "gain_threshold": 0.9, "seeds": 10, "seed": 0, "faithful": False, "settings": SETTINGS}
#: the numerical details of Chen et al.'s code that their description leaves out (see the module docstring)
DETAILS: dict[str, str] = {
    "reward_floor": "the reward is log(p_new / (beta q) + 1e-12): floored at log 1e-12 = -27.6",
    "density_floor": "1e-12 added to the model density where it divides (reward, importance weight, "
                     "responsibilities)",
    "numpy_stream": "NumPy's legacy stream, RandomState(seed + k), shared by a setting's runs in order "
                    "(seed 0 is their published run)",
}
#: the constant their code adds inside logs and to densities
FLOOR = 1e-12
LOG_FLOOR = math.log(FLOOR)
#: most seeds x samples per iteration (memory of the batched loop)
MAX_DRAWS = 10_000_000


def details_of(faithful: Any) -> tuple[str, ...]:
    """The active details: all of them for true, none for false, or the listed ones (in ``DETAILS`` order)."""
    allowed = "true, false or a list of " + ", ".join(DETAILS)
    if isinstance(faithful, bool):
        return tuple(DETAILS) if faithful else ()
    check(isinstance(faithful, list | tuple), "chen2025.faithful", faithful, allowed)
    for d in faithful:
        check(isinstance(d, str) and d in DETAILS, "chen2025.faithful", faithful, allowed)
    return tuple(d for d in DETAILS if d in faithful)


def variant_name(active: Sequence[str]) -> str:
    """'faithful', 'described', or the described method plus the listed details."""
    if tuple(active) == tuple(DETAILS):
        return "faithful"
    return "described" + "".join(f" + {d}" for d in active)


def _log_normal(x: torch.Tensor, mu: torch.Tensor | float, s: torch.Tensor | float) -> torch.Tensor:
    s = torch.as_tensor(s, dtype=x.dtype)
    return -0.5 * ((x - mu) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)


def _floored(log_d: torch.Tensor) -> torch.Tensor:
    """log(d + 1e-12) from log d."""
    return torch.logaddexp(log_d, torch.tensor(LOG_FLOOR, dtype=log_d.dtype))


def reward(log_p_new: torch.Tensor, log_q: torch.Tensor, beta: float, reward_floor: bool = False,
           density_floor: bool = False) -> torch.Tensor:
    """The RL reward log(p_new / (beta q)); their code's ``reward_floor`` adds 1e-12 inside the log and its
    ``density_floor`` 1e-12 to q (the uni-modal reward; the bi-modal one leaves q_new unfloored)."""
    r = log_p_new - (_floored(log_q) if density_floor else log_q) - math.log(beta)
    return _floored(r) if reward_floor else r


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


def _noise(seeds: int, samples: int, seed: int, numpy_stream: bool, skip: int) -> Callable[[], torch.Tensor]:
    """Standard normal draws, (seeds, samples) per call: one torch stream for all seeds, or one NumPy legacy
    stream per seed (RandomState(seed + k)) that first skips ``skip`` draws (the runs before this one)."""
    if not numpy_stream:
        g = torch.Generator().manual_seed(seed)
        return lambda: torch.randn(seeds, samples, generator=g, dtype=torch.float64)
    streams = [np.random.RandomState(seed + k) for k in range(seeds)]
    for rs in streams:
        for left in range(skip, 0, -1_000_000):
            rs.standard_normal(min(left, 1_000_000))
    return lambda: torch.from_numpy(np.stack([rs.standard_normal(samples) for rs in streams]))


def simulate(setting: str, method: str, lr: float, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run (all seeds at once); returns per-seed trajectories of gain and drop and the reading at threshold."""
    c = {**DEFAULTS, **(cfg or {})}
    check_choice(setting, "chen2025.setting", tuple(SETTINGS))
    check_choice(method, "chen2025.method", ("fkl", "reinforce"))
    check(lr > 0 and math.isfinite(lr), "chen2025.lr", lr, "a finite number > 0")
    for key in ("seeds", "samples"):
        check(is_int(c[key], 1), f"chen2025.{key}", c[key], "an integer >= 1")
    check(c["seeds"] * c["samples"] <= MAX_DRAWS, "chen2025.seeds", c["seeds"],
          f"seeds x samples <= {MAX_DRAWS} (samples = {c['samples']})")
    check(is_int(c["seed"], 0) and c["seed"] + c["seeds"] <= 2**32, "chen2025.seed", c["seed"],
          "an integer >= 0 with seed + seeds <= 2^32")
    active = details_of(c["faithful"])
    st = {**SETTINGS[setting], **c["settings"].get(setting, {})}
    t, S, n = c["target"], int(c["seeds"]), int(c["samples"])
    iterations = int(st["iterations"])
    # their script runs a setting's runs in order from one stream: this run starts after the draws of those before
    order = [(r["method"], float(r["lr"])) for r in st["runs"]]
    before = order.index((method, float(lr))) if (method, float(lr)) in order else 0
    draw = _noise(S, n, int(c["seed"]), "numpy_stream" in active, before * iterations * n)
    rf, df = "reward_floor" in active, "density_floor" in active
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
    for it in range(iterations + 1):
        acc = overlap_accuracy(*parts(), t, grid)
        gain.append(acc[1] - acc0[1])
        drop.append(acc0[0] - acc[0])
        if it == iterations:
            break
        eps = draw()
        if method == "fkl":
            # bi-modal: their hand-written gradient divides by q + 1e-12, i.e. it is that of log(q + 1e-12)
            lq = log_q(t["mu_new"] + t["sigma_new"] * eps)
            loss = -(_floored(lq) if df and bimodal else lq).mean(1).sum()
        elif bimodal:
            with torch.no_grad():
                x = th["mu_new"][:, None] + th["sigma_new"][:, None] * eps
                log_q2 = torch.log1p(-th["weight_old"])[:, None] + _log_normal(x, th["mu_new"][:, None],
                                                                               th["sigma_new"][:, None])
                lq = log_q(x)
                r = reward(_log_normal(x, t["mu_new"], t["sigma_new"]), log_q2, beta, rf)
                iw = torch.exp(_floored(lq) - _floored(log_q2)) if df else torch.exp(lq - log_q2)
            surrogate = _floored(log_q(x)) if df else log_q(x)
            loss = -(r * iw * surrogate).mean(1).sum()  # ascent on mean(r IS grad log q)
            if df:  # the new component's responsibility is (q2 + 1e-12) / (q + 1e-12): the 1e-12 / (q + 1e-12) rest
                rest = torch.exp(LOG_FLOOR - _floored(lq))
                log_n2 = _log_normal(x, th["mu_new"][:, None], th["sigma_new"][:, None])
                loss = loss - (r * iw * rest * log_n2).mean(1).sum()
        else:
            with torch.no_grad():
                x = th["mu"][:, None] + th["sigma"][:, None] * eps
                r = reward(_log_normal(x, t["mu_new"], t["sigma_new"]), log_q(x), beta, rf, df)
            loss = -(r * log_q(x)).mean(1).sum()
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
    return {"setting": setting, "method": method, "lr": lr, "faithful": c["faithful"] if isinstance(
                c["faithful"], bool) else list(active), "variant": variant_name(active), "seed": int(c["seed"]),
            "gain": gains, "drop": drops, "stop": stop, "reached": reached.any(0), "gain_at_stop": gains[stop, cols],
            "drop_at_stop": drops[stop, cols], "initial_acc": {"old": float(acc0[0][0]), "new": float(acc0[1][0])}}


def runs_of(cfg: dict[str, Any] | None = None) -> list[tuple[str, str, float]]:
    """(setting, method, lr) of every run of both settings, in their order (Chen's panels)."""
    c = {**DEFAULTS, **(cfg or {})}
    return [(setting, r["method"], float(r["lr"])) for setting in SETTINGS
            for r in {**SETTINGS[setting], **c["settings"].get(setting, {})}["runs"]]


def applies(detail: str, setting: str, method: str) -> bool:
    """Whether a detail can change a run: the reward floor only where there is a reward, the density floor
    everywhere but the uni-modal SFT (whose gradient never divides by q); the stream everywhere."""
    return {"reward_floor": method == "reinforce", "density_floor": not (setting == "unimodal" and method == "fkl"),
            "numpy_stream": True}[detail]


def run_all(cfg: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every run of both settings (Chen's panels), each over ``seeds`` seeds."""
    c = {**DEFAULTS, **(cfg or {})}
    return [simulate(setting, method, lr, c) for setting, method, lr in runs_of(c)]
