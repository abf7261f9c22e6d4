"""Maximum-likelihood pretraining of neural generators to the task's q0, cached so sweeps share the weights.

The cache can never change a result: a file is keyed by everything that determines the pretrained weights (the
architecture, the q0 it is fitted to, the pretraining settings and seed, the device, and a code version hashing
this module, the generator's module and the torch / zuko versions), and verified before it is used (its key, the
state's keys, shapes, dtypes and finiteness, a stored checksum of the weights, a finite NLL). A file that fails is
replaced by pretraining a model that never saw it; a non-finite result is never written. A file lock makes a
second process that needs the same weights wait for the first and then read them (runs in a process pool).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptforget import progress
from ptforget.errors import check, check_choice, is_number
from ptforget.io import atomic_replace, file_lock
from ptforget.tasks import TwoModeTask

log = logging.getLogger(__name__)

#: bump when the meaning of a cache file changes (its layout, or how pretraining works beyond this module's text)
CACHE_FORMAT = 2


def q0_signature(task: TwoModeTask) -> dict[str, Any]:
    """What of the task the pretrained weights depend on."""
    q = task.q0_params()
    return {
        "weight_old": round(float(q["weight_old"]), 12),
        "mu_old": [round(v, 10) for v in q["mu_old"].tolist()],
        "mu_new": [round(v, 10) for v in q["mu_new"].tolist()],
        "tril": [[round(v, 10) for v in row] for row in q["scale_tril"].tolist()],
    }


@functools.cache
def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "unreadable"


def code_version(model: nn.Module) -> dict[str, Any]:
    """The code the pretrained weights depend on: this module, the generator's module, torch and zuko."""
    files = {Path(__file__).name: _file_digest(__file__)}
    src = inspect.getsourcefile(type(model))
    if src:
        files[Path(src).name] = _file_digest(src)
    zuko = sys.modules.get("zuko")
    version = getattr(zuko, "__version__", None)
    return {"format": CACHE_FORMAT, "files": files, "torch": str(torch.__version__),  # plain str: weights_only
            "zuko": str(version) if version is not None else None}


def cache_key(kind: str, arch: dict[str, Any], task: TwoModeTask, settings: dict[str, Any],
              version: dict[str, Any] | None = None) -> str:
    """Hash of everything that determines the pretrained weights (``version``: ``code_version(model)``)."""
    blob = json.dumps({"kind": kind, "arch": arch, "q0": q0_signature(task), "pretrain": settings,
                       "code": version or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and bytes of every tensor, in sorted order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_problem(blob: Any, model: nn.Module, key: str) -> str | None:
    """Why ``blob`` (a loaded cache file) must not be used for ``model`` under ``key``, or None when it is sound."""
    if not isinstance(blob, dict):
        return f"not a mapping ({type(blob).__name__})"
    if blob.get("key") != key:
        return "written for another key (another code version or config)"
    state, expected = blob.get("state"), model.state_dict()
    if not isinstance(state, dict):
        return "no state dict"
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        return f"state keys differ (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, ref in expected.items():
        t = state[name]
        if not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            return f"{name} has shape/dtype {got} instead of {tuple(ref.shape)} {ref.dtype}"
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"{name} holds non-finite values"
    nll = blob.get("nll")
    if not isinstance(nll, float) or not math.isfinite(nll):
        return f"non-finite or missing NLL ({nll!r})"
    if blob.get("checksum") != state_checksum(state):
        return "checksum mismatch (the weights were changed after they were written)"
    return None


def _load(path: Path, model: nn.Module, key: str, say: bool = True) -> dict[str, float] | None:
    """Load a sound cache file into ``model`` (left untouched otherwise); None when absent or unsound (logged
    once, when ``say``)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        problem = f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    else:
        problem = cache_problem(blob, model, key)
    if problem is not None:
        if say:
            log.warning("rebuilding pretrain cache %s from a fresh model: %s", path, problem)
        return None
    model.load_state_dict(blob["state"])
    stats = {"pretrain_nll": float(blob["nll"]), "pretrain_cached": 1.0}
    if isinstance(blob.get("q0_entropy"), float):
        stats["pretrain_q0_entropy"] = blob["q0_entropy"]
    return stats


#: pretraining settings and their defaults (a generator's ``pretrain`` mapping may set any of them)
PRETRAIN_DEFAULTS: dict[str, Any] = {"steps": 2000, "batch": 512, "lr": 3e-3, "seed": 0, "schedule": "cosine",
                                     "objective": "samples", "refine": 0}
SCHEDULES = ("cosine", "constant")
#: how the cross-entropy E_q0[-log q] is estimated: from ``batch`` fresh q0 samples per step, or by quadrature on
#: the task's 1-D grid (the exact integral and its exact gradient: no sampling noise, so the fit converges to the
#: family's best approximation instead of hovering around it; 1-D tasks only). With quadrature, ``refine`` > 0 then
#: runs up to that many L-BFGS iterations (strong Wolfe line search, in float64) after the Adam steps: on a
#: deterministic objective it reaches the optimum's neighbourhood in far fewer steps than Adam. ``auto`` is
#: quadrature on a 1-D task and samples otherwise (without the refinement), for a profile whose runs mix dimensions
OBJECTIVES = ("samples", "quadrature", "auto")
#: most L-BFGS iterations a config may ask for (each evaluates the loss up to 1.25 times)
MAX_REFINE = 100_000


def pretrain_settings(pretrain: dict | None, task: TwoModeTask, **defaults: Any) -> dict[str, Any]:
    """The pretraining settings: ``PRETRAIN_DEFAULTS``, then the family's ``defaults``, then ``pretrain``; checked.

    ``seed`` must be an integer here: a config's ``null`` (follow the run's seed) is resolved by
    ``ptforget.build`` before the generator is built.
    """
    pre = {**PRETRAIN_DEFAULTS, **defaults, **dict(pretrain or {})}
    unknown = sorted(set(pre) - set(PRETRAIN_DEFAULTS))
    check(not unknown, f"generator.pretrain.{unknown[0] if unknown else ''}", "<given>",
          f"one of {', '.join(PRETRAIN_DEFAULTS)}")
    for key, lo in (("steps", 0), ("batch", 1), ("refine", 0)):
        check(isinstance(pre[key], int) and not isinstance(pre[key], bool) and pre[key] >= lo,
              f"generator.pretrain.{key}", pre[key], f"an integer >= {lo}")
    check(isinstance(pre["seed"], int) and not isinstance(pre["seed"], bool) and pre["seed"] >= 0,
          "generator.pretrain.seed", pre["seed"], "an integer >= 0 (null = the run's seed, resolved by the build)")
    check(is_number(pre["lr"]) and pre["lr"] > 0, "generator.pretrain.lr", pre["lr"], "a finite number > 0")
    check_choice(pre["schedule"], "generator.pretrain.schedule", SCHEDULES)
    check_choice(pre["objective"], "generator.pretrain.objective", OBJECTIVES)
    check(pre["objective"] != "quadrature" or task.dim == 1, "generator.pretrain.objective", pre["objective"],
          "'samples' or 'auto' when task.dim > 1 (quadrature needs a 1-D task)")
    check(pre["refine"] <= MAX_REFINE, "generator.pretrain.refine", pre["refine"], f"an integer in [0, {MAX_REFINE}]")
    check(pre["refine"] == 0 or pre["objective"] != "samples", "generator.pretrain.refine", pre["refine"],
          "0 unless generator.pretrain.objective is 'quadrature' or 'auto' (L-BFGS needs a deterministic loss)")
    if pre["objective"] == "auto":  # resolved here, so the cache key names what was run
        pre["objective"] = "quadrature" if task.dim == 1 else "samples"
        pre["refine"] = pre["refine"] if task.dim == 1 else 0
    return pre


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
    schedule: str = "cosine",
    objective: str = "samples",
    refine: int = 0,
    cache_dir: str | os.PathLike | None,
) -> dict[str, float]:
    """Fit ``model.log_prob`` to q0 by Adam (learning rate ``lr`` under ``schedule``; the cross-entropy from
    samples or by quadrature, then ``refine`` L-BFGS iterations; see ``OBJECTIVES``), or load the cached weights.
    Returns fit statistics."""
    device = next(model.parameters()).device
    settings = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "device": device.type,
                "dtype": str(next(model.parameters()).dtype), "schedule": schedule, "objective": objective,
                "refine": refine}
    key = cache_key(kind, arch, task, settings, code_version(model))
    if cache_dir is None:
        return _fit(model, task, settings, device)
    path = Path(cache_dir) / f"{kind}-{key}.pt"
    existed = path.exists()
    loaded = _load(path, model, key)
    if loaded is not None:
        return loaded
    with file_lock(path.with_name(path.name + ".lock")):  # a second process waits, then reads what the first wrote
        loaded = _load(path, model, key, say=not existed)
        if loaded is not None:
            return loaded
        stats = _fit(model, task, settings, device)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        finite = math.isfinite(stats["pretrain_nll"]) and all(
            bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
        if not finite:
            log.warning("pretraining %s ended with non-finite weights or NLL (%s): not cached", path.name,
                        stats["pretrain_nll"])
            return stats
        with atomic_replace(path) as tmp:
            torch.save({"state": state, "nll": float(stats["pretrain_nll"]), "checksum": state_checksum(state),
                        "q0_entropy": float(stats["pretrain_q0_entropy"]), "key": key,
                        "version": code_version(model)}, tmp)
    return stats


def _fit(model: nn.Module, task: TwoModeTask, settings: dict[str, Any], device: torch.device) -> dict[str, float]:
    steps = int(settings["steps"])
    gen = torch.Generator(device="cpu").manual_seed(int(settings["seed"]))
    q0 = task.q0
    opt = torch.optim.Adam(model.parameters(), lr=float(settings["lr"]))
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps)) if settings["schedule"] == "cosine"
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    if settings["objective"] == "quadrature":  # q0's probability on each node of the grid: the loss's weights
        x_grid, v = task.grid()
        x_grid = x_grid.to(device)
        w = (v * task.log_prob("q0", x_grid).exp()).to(device)
        w = w / w.sum()
    with torch.random.fork_rng(devices=[]), progress.bar(f"pretraining {type(model).__name__} to q0", steps) as done:
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        for i in range(steps):
            if settings["objective"] == "quadrature":
                loss = -(w * model.log_prob(x_grid)).sum()
            else:
                loss = -model.log_prob(q0.sample((int(settings["batch"]),)).to(device)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done(i + 1)
        if int(settings["refine"]) > 0:  # in float64: the old mode's mass at beta* = 0.05 moves the loss by ~1e-6
            dtype = next(model.parameters()).dtype  # nats, near float32's resolution of a loss of a few nats
            model.double()
            x64, w64 = x_grid.double(), w.double()
            lbfgs = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=int(settings["refine"]), history_size=50,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

            def closure() -> torch.Tensor:
                lbfgs.zero_grad(set_to_none=True)
                loss = -(w64 * model.log_prob(x64)).sum()
                loss.backward()
                return loss

            lbfgs.step(closure)
            model.to(dtype)
        with torch.no_grad():
            x = q0.sample((8192,)).to(device)
            nll = float(-model.log_prob(x).mean())
            entropy = float(-q0.log_prob(x).mean())
    return {"pretrain_nll": nll, "pretrain_q0_entropy": entropy, "pretrain_cached": 0.0}
