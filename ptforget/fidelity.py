"""How closely a generator's start matches the task's q0: KL(q0 || model) and the old-region mass.

A theory prediction is about a model that starts at q0, so a neural family's pretrained start is measured against
q0 before its runs count: in 1-D by composite Gauss-Legendre quadrature on a fine grid of its own (panels of
``panel`` standard deviations over ``margin`` standard deviations beyond the modes; independent of the task's
readout grid and of the display grid), in d > 1 by Monte Carlo with the estimate's standard error. q0's own old
mass is exact (a Gaussian mixture over a half-space).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ptforget.generators.base import Generator, region_stats
from ptforget.tasks import TwoModeTask
from ptforget.theory._quadrature import composite_gauss_legendre


def q0_old_mass(task: TwoModeTask) -> float:
    """q0's exact mass on the old region of p*."""
    w = torch.tensor([float(task.beta0), 1 - float(task.beta0)], device=task.mu_old.device)
    loc = torch.stack([task.mu_old, task.mu_new_init])
    st = region_stats(w, loc, task.cov.expand(2, task.dim, task.dim), task)
    return float(st["region_mass"])


def fine_grid(task: TwoModeTask, panel: float = 0.02, order: int = 8, margin: float = 12.0) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes (n, 1) and weights (n,) over [modes - margin sd, modes + margin sd] (1-D tasks)."""
    s = float(task.scale_tril[0, 0])
    pts = [float(task.mu_old[0]), float(task.mu_new[0]), float(task.mu_new_init[0])]
    lo, hi = min(pts) - margin * s, max(pts) + margin * s
    a, b = (float(t.reshape(-1)[0]) for t in task.old_region_halfspace())
    cut = min(max(b / a, lo), hi) if a != 0 else lo  # a panel edge on the old region's boundary: no step inside
    parts = [composite_gauss_legendre(c0, c1, panel=panel * s, order=order)
             for c0, c1 in ((lo, cut), (cut, hi)) if c1 > c0]
    x, w = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return (torch.tensor(x, dtype=torch.float32, device=task.mu_old.device).unsqueeze(-1),
            torch.tensor(w, dtype=torch.float64, device=task.mu_old.device))


def _se(v: Tensor) -> Tensor:
    """Standard error of the mean over the last axis."""
    return v.std(-1) / math.sqrt(v.shape[-1])


@torch.no_grad()
def start_fidelity(generator: Generator, task: TwoModeTask, n: int = 200_000, seed: int = 0,
                   panel: float = 0.02) -> dict[str, Tensor]:
    """Fidelity of ``generator`` to q0, each value shaped like the generator's members (``batch_shape``).

    Returns ``kl`` = KL(q0 || model) in nats and ``kl_se`` (its Monte-Carlo standard error; 0 by quadrature),
    ``old_mass`` (the model's mass on p*'s old region) and ``old_mass_se``, ``q0_old_mass``, ``old_mass_rel_err`` =
    |old_mass - q0_old_mass| / q0_old_mass, and ``total_mass`` with ``total_mass_se`` (1-D: the model's mass on the
    grid, less for a model that leaks mass beyond the modes; d > 1: E_q0[model / q0], less for a model with mass
    where q0 has none). In d > 1 the estimates use ``n`` draws from q0 (a generator seeded by ``seed``); the old
    mass is q0's exact one plus E_q0[1_old (model / q0 - 1)], whose error shrinks with the mismatch.
    """
    batch = generator.batch_shape
    m0 = q0_old_mass(task)
    if task.dim == 1:
        x, v = fine_grid(task, panel=panel)
        lq = generator.log_prob(x.expand(*batch, *x.shape)).double()
        lp = task.log_prob("q0", x).double()
        q = v * lq.exp()
        kl = (v * lp.exp() * (lp - lq)).sum(-1)
        mass = (q * task.old_region(x).double()).sum(-1)
        zero = torch.zeros_like(kl)
        out = {"kl": kl, "kl_se": zero, "old_mass": mass, "old_mass_se": zero, "total_mass": q.sum(-1),
               "total_mass_se": zero}
    else:  # y ~ q0; r = start / q0: KL = E[-log r], old mass = m0 + E[1_old (r - 1)] (a control variate: its
        # error shrinks with the start's mismatch, where plain sampling of the start has sd sqrt(m (1 - m) / n)),
        # and E[r] = 1 unless the start puts mass where q0 has almost none (``total_mass``)
        with torch.random.fork_rng(devices=[] if task.mu_old.device.type == "cpu" else [task.mu_old.device]):
            torch.manual_seed(seed)
            y = task.sample("q0", n, batch)
        log_r = (generator.log_prob(y) - task.log_prob("q0", y)).double()
        r = log_r.exp()
        extra = task.old_region(y).double() * (r - 1)
        out = {"kl": -log_r.mean(-1), "kl_se": _se(log_r), "old_mass": m0 + extra.mean(-1),
               "old_mass_se": _se(extra), "total_mass": r.mean(-1), "total_mass_se": _se(r)}
    out["q0_old_mass"] = torch.full_like(out["kl"], m0)
    out["old_mass_rel_err"] = (out["old_mass"] - m0).abs() / m0
    return out
