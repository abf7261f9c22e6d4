"""Build and run one post-training job from a composed config; write trajectory.csv and summary.json.

``run_training`` is the in-process entry point (the check and the tests call it without Hydra's CLI); this module
owns the run lifecycle (reuse, resume, fit, summaries). Objects are built by ``ptforget.build``, configs are
validated by ``ptforget.validate``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ptforget import build
from ptforget.io import read_json, write_csv, write_json

log = logging.getLogger("ptforget")

#: config keys that do not change a run's result (excluded from its hash)
NON_RESULT_KEYS = ("paths", "logger", "hydra", "quiet", "study", "checkpoint_every")


def config_hash(cfg: DictConfig | dict, **replace: Any) -> str:
    """Stable hash of everything that determines a run's result (seed included); ``replace`` overrides top-level
    keys (a member's seed) without building a new config."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c = {k: v for k, v in {**c, **replace}.items() if k not in NON_RESULT_KEYS}
    if isinstance(c.get("trainer"), dict):
        c["trainer"] = {k: v for k, v in c["trainer"].items() if k not in ("enable_progress_bar",)}
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:12]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_training(cfg: DictConfig, run_dir: str | os.PathLike, reuse: bool = True) -> dict[str, Any]:
    """Train one configuration and write trajectory.csv / summary.json into ``run_dir``; return the summary.

    Re-running a finished configuration (same ``config_hash``, status complete or diverged) returns its summary
    and writes nothing; an interrupted one resumes from ``run_dir/last.ckpt``. With ``seeds = S > 1`` the members
    (seeds ``seed .. seed+S-1``) go to ``run_dir/seed<k>/`` and ``run_dir/ensemble.json`` lists them; batchable
    objectives train them together (``SeedEnsemble``), the others one after another. Returns the summary of the
    run, or for S > 1 the ensemble summary with every member's summary under ``members``.
    """
    from ptforget.validate import validate_top

    run_dir = Path(run_dir)
    validate_top(cfg)
    seeds = int(cfg.get("seeds", 1))
    finished = finished_summary(run_dir, cfg) if reuse else None
    if finished is not None:
        log.info("skipping %s: already %s", run_dir, finished.get("status"))
        return finished
    build.quiet_lightning()
    torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed))
    task, generator, objective = build.build(cfg)
    if seeds > 1 and not objective.batchable:
        return _sequential_seeds(cfg, run_dir, reuse)
    seed_everything(int(cfg.seed))  # pretraining used its own seed; post-training starts from this one
    return _fit(cfg, run_dir, task, generator, objective, reuse)


def member_config(cfg: DictConfig, k: int) -> DictConfig:
    """The config of member k of a multi-seed run that runs on its own: seed + k, seeds = 1."""
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    c.seed, c.seeds = int(cfg.seed) + k, 1
    return c


def finished_summary(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The summary of a finished run of this exact config in ``run_dir`` (None if absent, other, or unfinished)."""
    name = "ensemble.json" if int(cfg.get("seeds", 1)) > 1 else "summary.json"
    try:
        s = read_json(run_dir / name)
    except (OSError, ValueError):
        return None
    if not (isinstance(s, dict) and s.get("status") in ("complete", "diverged")
            and s.get("config_hash") == config_hash(cfg)):
        return None
    if name == "ensemble.json":
        try:
            s["members"] = [read_json(run_dir / f"seed{k}" / "summary.json") for k in s["seeds"]]
        except (OSError, ValueError):
            return None
    return s


def _sequential_seeds(cfg: DictConfig, run_dir: Path, reuse: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    members = [run_training(member_config(cfg, k), run_dir / f"seed{int(cfg.seed) + k}", reuse)
               for k in range(int(cfg.seeds))]
    return _write_ensemble(cfg, run_dir, members, batched=False, wall=time.perf_counter() - t0)


def _write_ensemble(cfg: DictConfig, run_dir: Path, members: list[dict[str, Any]], batched: bool,
                    wall: float) -> dict[str, Any]:
    statuses = [m["status"] for m in members]
    status = "complete" if all(s in ("complete", "diverged") for s in statuses) else \
        next(s for s in statuses if s not in ("complete", "diverged"))
    summary = {"status": status, "config_hash": config_hash(cfg), "seeds": [m["seed"] for m in members],
               "batched": batched, "wall_time_s": wall,
               "runs": {f"seed{m['seed']}": m["status"] for m in members}}
    write_json(run_dir / "ensemble.json", summary)
    return {**summary, "members": members}


def _fit(cfg: DictConfig, run_dir: Path, task: Any, generator: Any, objective: Any, reuse: bool) -> dict[str, Any]:
    from ptforget.module import PostTrainModule

    seeds = int(cfg.get("seeds", 1))
    max_steps = int(cfg.trainer.max_steps)
    ckpt = run_dir / "last.ckpt"
    module = PostTrainModule(generator, objective, task, build.optimizer_config(cfg), eval_every=int(cfg.eval_every),
                             n_eval=int(cfg.n_eval), max_steps=max_steps, seeds=seeds, checkpoint_path=ckpt,
                             checkpoint_every=int(cfg.get("checkpoint_every", 0)),
                             compile=bool(cfg.get("compile", False)), grad_clip=build.grad_clip_config(cfg))
    run_hash = config_hash(cfg)
    module.checkpoint_meta = {"config_hash": run_hash}
    state = _load_checkpoint(ckpt, run_hash) if reuse else None
    if state is not None:
        module.resume_from(state)
        log.info("resuming %s from step %d", run_dir, module.step)
    logger = build.make_logger(cfg, run_dir)
    trainer = build.make_trainer(cfg, logger)
    loader = torch.utils.data.DataLoader(range(module.start_chunk, module.n_chunks), batch_size=None)
    t0 = time.perf_counter()
    status, reason = "complete", ""
    try:
        trainer.fit(module, loader)
    except (KeyboardInterrupt, SystemExit) as err:  # Lightning turns Ctrl-C into SystemExit after its shutdown
        _write_members(cfg, run_dir, module, "interrupted", type(err).__name__, time.perf_counter() - t0)
        build.finish_logger(logger)
        raise
    except Exception as err:  # record the failure, then re-raise
        _write_members(cfg, run_dir, module, "failed", f"{type(err).__name__}: {err}", time.perf_counter() - t0)
        build.finish_logger(logger)
        raise
    summary = _write_members(cfg, run_dir, module, status, reason, time.perf_counter() - t0)
    if status == "complete":
        ckpt.unlink(missing_ok=True)
    build.finish_logger(logger)
    return summary


def _load_checkpoint(path: Path, run_hash: str) -> dict[str, Any] | None:
    """The resume state in ``path`` if it belongs to the run with this config hash (an unreadable or foreign one
    is ignored)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn or foreign file: start over rather than fail
        log.warning("ignoring unreadable checkpoint %s (%s)", path, err)
        return None
    return state if state.get("config_hash") == run_hash else None


def _write_members(cfg: DictConfig, run_dir: Path, module: Any, status: str, reason: str,
                   wall: float) -> dict[str, Any]:
    """Write each member's trajectory and summary (the run itself when seeds = 1); return the run's summary."""
    seeds, first = module.S, int(cfg.seed)
    container = OmegaConf.to_container(cfg, resolve=True)
    out = []
    for k in range(seeds):
        st, why = status, reason
        if module.diverged[k] is not None and status == "complete":
            st, why = "diverged", module.diverged[k][1]
        if seeds == 1:
            summary = summarize(container, module, st, why, wall)
            write_outputs(run_dir, module.histories[0], summary)
            return summary
        # the member's own hash names its seed and its ensemble (first seed, size): it differs from a solo run's
        # hash because the random streams differ
        member = {**container, "seed": first + k, "seeds": {"size": seeds, "first_seed": first}}
        summary = summarize(member, module, st, why, wall, member=k)
        summary["ensemble"] = {"seeds": seeds, "member": k, "first_seed": first, "batched": True}
        write_outputs(run_dir / f"seed{first + k}", module.histories[k], summary)
        out.append(summary)
    return _write_ensemble(cfg, run_dir, out, batched=True, wall=wall)


def summarize(cfg: dict[str, Any], module: Any, status: str, reason: str, wall: float,
              member: int = 0) -> dict[str, Any]:
    """The summary.json of one run (or one member of a batched run); ``cfg`` is the resolved config as a dict."""
    metrics = module.summary_metrics(member)
    history = module.histories[member]
    diverged = module.diverged[member]
    final = {k: v["last"] for k, v in metrics.items()}
    om = metrics.get("old_mass")
    forgetting = ({"old_mass_first_minus_last": om["first"] - om["last"], "old_mass_max_minus_last": om["max"]
                   - om["last"]} if om else {})
    gen = cfg["generator"].get("_target_", "").rsplit(".", 1)[-1]
    return {
        "status": status,
        "reason": reason,
        "diverged_step": diverged[0] if diverged else None,
        "seed": int(cfg["seed"]),
        "config_hash": config_hash(cfg),
        "generator": gen,
        "objective": module.objective.name,
        "steps": int(history[-1]["step"]) if history else 0,
        "max_steps": int(cfg["trainer"]["max_steps"]),
        "wall_time_s": wall,
        "resumed_from_step": module.resumed_from,
        "final": final,
        "extremes": metrics,
        "forgetting": forgetting,
        "pretrain": getattr(module.generator, "pretrain_stats", {}),
        "overrides": _overrides(),
    }


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def write_outputs(run_dir: Path, history: list[dict[str, float]], summary: dict[str, Any]) -> None:
    """trajectory.csv first, summary.json last: a summary on disk means the trajectory is complete."""
    write_csv(run_dir / "trajectory.csv", history)
    write_json(run_dir / "summary.json", summary)
