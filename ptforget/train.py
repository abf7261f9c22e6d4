"""Build and run one post-training job from a composed config; write trajectory.csv and summary.json.

``run_training`` is the in-process entry point (the check and the tests call it without Hydra's CLI); configs
reach code only through ``hydra.utils.instantiate``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ptforget.errors import ConfigError, check, check_choice
from ptforget.io import write_csv, write_json

log = logging.getLogger("ptforget")

#: config keys that do not change a run's result (excluded from its hash)
NON_RESULT_KEYS = ("paths", "logger", "hydra", "quiet", "study")
LOGGERS = ("csv", "wandb", "none")
#: keys of a group config that describe it rather than its constructor
RESERVED_KEYS = ("default_lr", "default_schedule")


def config_hash(cfg: DictConfig | dict) -> str:
    """Stable hash of everything that determines a run's result (seed included)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c = {k: v for k, v in c.items() if k not in NON_RESULT_KEYS}
    if isinstance(c.get("trainer"), dict):
        c["trainer"] = {k: v for k, v in c["trainer"].items() if k not in ("enable_progress_bar",)}
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:12]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def quiet_lightning() -> None:
    """Lightning's start-up banners are noise for many tiny runs."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LitLogger.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate() that surfaces our ConfigError instead of Hydra's wrapper."""
    spec = OmegaConf.to_container(node, resolve=True)
    node = OmegaConf.create({k: v for k, v in spec.items() if k not in RESERVED_KEYS})
    try:
        factory = instantiate(node, _partial_=True, _convert_="all")
    except InstantiationException as err:
        _reraise(err, node, key)
    try:
        return factory(**kwargs)  # objects (the task) are passed here so OmegaConf never converts them
    except TypeError as err:
        if "unexpected keyword" in str(err):
            bad = str(err).split("'")[-2] if "'" in str(err) else "?"
            raise ConfigError(f"{key}.{bad}", "<given>", f"a key accepted by {node.get('_target_')}") from None
        raise


def _reraise(err: InstantiationException, node: DictConfig, key: str) -> None:
    cause = err.__cause__
    if isinstance(cause, ConfigError):
        raise cause from None
    raise err


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """(task, generator, objective) from the config, validated."""
    task = _instantiate(cfg.task, "task")
    generator = _instantiate(cfg.generator, "generator", task=task)
    objective = _instantiate(cfg.objective, "objective")
    return task, generator, objective


def validate_top(cfg: DictConfig) -> None:
    check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    check(isinstance(cfg.threads, int) and cfg.threads >= 1, "threads", cfg.threads, "an integer >= 1")
    ms = cfg.trainer.max_steps
    check(isinstance(ms, int) and ms >= 1, "trainer.max_steps", ms, "an integer >= 1")
    check_choice(cfg.logger.kind, "logger.kind", LOGGERS)


def optimizer_config(cfg: DictConfig) -> dict[str, Any]:
    """The optimizer config with ``lr``/``schedule`` null resolved to the generator family's defaults."""
    opt = OmegaConf.to_container(cfg.optimizer, resolve=True)
    if opt.get("lr") is None:
        opt["lr"] = cfg.generator.get("default_lr", 0.01)
    if opt.get("schedule") is None:
        opt["schedule"] = cfg.generator.get("default_schedule", "constant")
    return opt


def make_logger(cfg: DictConfig, run_dir: Path) -> Any:
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="", version="lightning")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_CACHE_DIR", str(run_dir / ".wandb-cache"))
    mode = cfg.logger.get("mode", "offline")
    check_choice(mode, "logger.mode", ("offline", "online", "disabled"))
    os.environ.setdefault("WANDB_MODE", mode)
    return _wandb_logger(cfg, run_dir, mode)


def _wandb_logger(cfg: DictConfig, run_dir: Path, mode: str) -> Any:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    run = wandb.init(project=cfg.logger.project, group=cfg.logger.get("group"), entity=cfg.logger.get("entity"),
                     dir=str(run_dir), mode=mode, config=OmegaConf.to_container(cfg, resolve=True),
                     reinit="finish_previous")
    return WandbLogger(experiment=run)


def run_training(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train one configuration and write trajectory.csv / summary.json into ``run_dir``; return the summary."""
    import lightning as L

    from ptforget.module import PostTrainModule

    run_dir = Path(run_dir)
    validate_top(cfg)
    quiet_lightning()
    torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed))
    task, generator, objective = build(cfg)
    seed_everything(int(cfg.seed))  # pretraining used its own seed; post-training starts from this one
    max_steps = int(cfg.trainer.max_steps)
    module = PostTrainModule(generator, objective, task, optimizer_config(cfg),
                             eval_every=int(cfg.eval_every), n_eval=int(cfg.n_eval), max_steps=max_steps)
    logger = make_logger(cfg, run_dir)
    trainer_kw = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer = L.Trainer(logger=logger, enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, max_epochs=-1, **trainer_kw)
    loader = torch.utils.data.DataLoader(range(max_steps), batch_size=None, shuffle=False)
    t0 = time.perf_counter()
    status, reason = "complete", ""
    try:
        trainer.fit(module, loader)
    except KeyboardInterrupt:
        status, reason = "interrupted", "KeyboardInterrupt"
    except Exception as err:  # record the failure, then re-raise
        summary = summarize(cfg, module, "failed", f"{type(err).__name__}: {err}", time.perf_counter() - t0)
        write_outputs(run_dir, module.history, summary)
        _finish_logger(logger)
        raise
    wall = time.perf_counter() - t0
    if module.status == "diverged":
        status, reason = "diverged", module.reason
    summary = summarize(cfg, module, status, reason, wall)
    write_outputs(run_dir, module.history, summary)
    _finish_logger(logger)
    return summary


def _finish_logger(logger: Any) -> None:
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()


def summarize(cfg: DictConfig, module: Any, status: str, reason: str, wall: float) -> dict[str, Any]:
    metrics = module.summary_metrics()
    final = {k: v["last"] for k, v in metrics.items()}
    om = metrics.get("old_mass")
    forgetting = ({"old_mass_first_minus_last": om["first"] - om["last"], "old_mass_max_minus_last": om["max"]
                   - om["last"]} if om else {})
    gen = cfg.generator.get("_target_", "").rsplit(".", 1)[-1]
    return {
        "status": status,
        "reason": reason,
        "diverged_step": module.diverged_step,
        "seed": int(cfg.seed),
        "config_hash": config_hash(cfg),
        "generator": gen,
        "objective": module.objective.name,
        "steps": int(module.history[-1]["step"]) if module.history else 0,
        "max_steps": int(cfg.trainer.max_steps),
        "wall_time_s": wall,
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
