"""Maximum-likelihood pretraining of neural generators to the task's q0, cached by config hash.

Sweeps re-use the same pretrained weights: the cache key hashes the generator's architecture, the q0 it is
fitted to, the pretraining settings and the seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptforget.tasks import TwoModeTask

log = logging.getLogger(__name__)


def q0_signature(task: TwoModeTask) -> dict[str, Any]:
    """What of the task the pretrained weights depend on."""
    q = task.q0_params()
    return {
        "weight_old": round(float(q["weight_old"]), 12),
        "mu_old": [round(v, 10) for v in q["mu_old"].tolist()],
        "mu_new": [round(v, 10) for v in q["mu_new"].tolist()],
        "tril": [[round(v, 10) for v in row] for row in q["scale_tril"].tolist()],
    }


def cache_key(kind: str, arch: dict[str, Any], task: TwoModeTask, settings: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "arch": arch, "q0": q0_signature(task), "pretrain": settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_mle(
    model: nn.Module,
    task: TwoModeTask,
    *,
    kind: str,
    arch: dict[str, Any],
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    cache_dir: str | os.PathLike | None,
) -> dict[str, float]:
    """Fit ``model.log_prob`` to samples of q0 by Adam, or load the cached weights. Returns fit statistics."""
    settings = {"steps": steps, "batch": batch, "lr": lr, "seed": seed}
    key = cache_key(kind, arch, task, settings)
    path = Path(cache_dir) / f"{kind}-{key}.pt" if cache_dir else None
    if path is not None and path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(blob["state"])
            return {"pretrain_nll": float(blob["nll"]), "pretrain_cached": 1.0}
        except Exception as err:  # a corrupt cache file is rebuilt, never fatal
            log.warning("ignoring unreadable pretrain cache %s: %s", path, err)
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q0 = task.q0
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        for _ in range(steps):
            x = q0.sample((batch,)).to(device)
            loss = -model.log_prob(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            x = q0.sample((8192,)).to(device)
            nll = float(-model.log_prob(x).mean())
            entropy = float(-q0.log_prob(x).mean())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save({"state": model.state_dict(), "nll": nll}, tmp)
        os.replace(tmp, path)
    return {"pretrain_nll": nll, "pretrain_q0_entropy": entropy, "pretrain_cached": 0.0}
