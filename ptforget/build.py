"""Building a run's objects from a composed config: the task, generator and objective (through Hydra's
``instantiate``), the optimizer, the logger and the Lightning Trainer. The one owner of object construction:
validation, the command line and the run lifecycle call these functions.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ptforget.errors import ConfigError, check, check_choice, is_number

#: keys of a group config that describe it rather than its constructor
RESERVED_KEYS = ("default_lr", "default_schedule")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
LOGGERS = ("csv", "wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")


#: the class every ``_target_`` of a group must be (or subclass): a command line or a config file may name only
#: what the group is for, never an arbitrary callable (``objective._target_=os.system`` ran a shell command)
GROUP_BASES = {"task": "ptforget.tasks.TwoModeTask", "generator": "ptforget.generators.base.Generator",
               "objective": "ptforget.objectives.base.Objective", "executor": "ptforget.check.executors.Executor"}


def check_target(node: Any, key: str) -> type:
    """The class a group's ``_target_`` names, checked before anything is called: a subclass of the group's base
    class (``GROUP_BASES``), in a flat group (no nested ``_target_`` or instantiate options, which would call
    more). ConfigError naming ``<key>._target_`` (or the nested key) otherwise."""
    from hydra._internal.utils import _locate

    spec = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    check(isinstance(spec, dict) and "_target_" in spec, key, spec, "a config group with a _target_")
    base_path = GROUP_BASES.get(key.split(".")[0])
    base = _locate(base_path) if base_path else object
    allowed = f"a subclass of {base_path}" if base_path else "an importable class"
    target = spec["_target_"]
    check(isinstance(target, str) and target != "", f"{key}._target_", target, allowed)
    for k, v in spec.items():
        nested = _nested_target(v)
        if (k.startswith("_") and k != "_target_") or nested is not None:
            where = f"{key}.{k}" + (f".{nested}" if nested else "")
            raise ConfigError(where, v if not nested else "<a nested _target_>",
                              "plain values (instantiate options and nested _target_ are not allowed in a group)")
    try:
        cls = _locate(target)
    except Exception:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{key}._target_", target, allowed)
    return cls


def _nested_target(v: Any, path: str = "") -> str | None:
    """The dotted path to a ``_target_`` (or ``_partial_``, ``_args_``...) nested in ``v``, '' at the top, or None."""
    if isinstance(v, dict):
        for k, x in v.items():
            if str(k).startswith("_"):
                return f"{path}.{k}".lstrip(".")
            got = _nested_target(x, f"{path}.{k}")
            if got is not None:
                return got
    elif isinstance(v, list):
        for i, x in enumerate(v):
            got = _nested_target(x, f"{path}.{i}")
            if got is not None:
                return got
    return None


def instantiate_group(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Call the group's ``_target_`` (checked first by :func:`check_target`) with its keys; our ConfigError, not
    Hydra's wrapper, when a value is refused."""
    cls = check_target(node, key)
    spec = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in RESERVED_KEYS}
    factory: Any = functools.partial(cls, **{k: v for k, v in spec.items() if k != "_target_"})
    try:
        return factory(**kwargs)  # objects (the task) are passed here so OmegaConf never converts them
    except TypeError as err:
        if "unexpected keyword" in str(err):
            bad = str(err).split("'")[-2] if "'" in str(err) else "?"
            raise ConfigError(f"{key}.{bad}", "<given>", f"a key accepted by {node.get('_target_')}") from None
        raise


def target_class(node: DictConfig) -> Any:
    """The class or function a group's ``_target_`` names (imported as instantiate would), or None."""
    from hydra._internal.utils import _locate

    try:
        return _locate(str(node.get("_target_")))
    except Exception:
        return None


def without_pretraining(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose generator skips pretraining and its cache (cheap to build: used by pre-flight)."""
    light = OmegaConf.to_container(cfg, resolve=True)
    gen = light.get("generator") or {}
    if isinstance(gen.get("pretrain"), dict):
        gen["pretrain"] = {**_seeded(gen["pretrain"], cfg), "steps": 0, "refine": 0}
    if "cache_dir" in gen:
        gen["cache_dir"] = None
    return OmegaConf.create(light)


def _seeded(pretrain: dict[str, Any], cfg: DictConfig, member: int = 0) -> dict[str, Any]:
    """``pretrain`` with a ``seed`` of null (follow the run) resolved to the run's seed + ``member``."""
    if "seed" in pretrain and pretrain["seed"] is None:
        run_seed = cfg.get("seed", 0)
        return {**pretrain, "seed": (int(run_seed) if is_number(run_seed) else run_seed) + member}
    return pretrain


def generator_node(cfg: DictConfig, member: int = 0) -> DictConfig:
    """The generator's config with ``pretrain.seed: null`` resolved to the seed of the run's member ``member``
    (``seed + member``: batched member k is the solo run of seed + k, pretrained with its own seed)."""
    gen = OmegaConf.to_container(cfg.generator, resolve=True)
    if isinstance(gen.get("pretrain"), dict):
        gen["pretrain"] = _seeded(gen["pretrain"], cfg, member)
    return OmegaConf.create(gen)


def pretrain_follows_seed(cfg: DictConfig) -> bool:
    """The generator's pretraining (and initial weights) follow the run's seed (``generator.pretrain.seed: null``)."""
    pre = cfg.generator.get("pretrain")
    return isinstance(pre, DictConfig) and "seed" in pre and pre.seed is None


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """(task, generator, objective) from the config, validated by their constructors."""
    task = instantiate_group(cfg.task, "task")
    generator = instantiate_group(generator_node(cfg), "generator", task=task)
    objective = instantiate_group(cfg.objective, "objective")
    return task, generator, objective


def member_starts(cfg: DictConfig, task: Any, generator: Any) -> list[Any] | None:
    """The generators the ``seeds`` batched members start from, or None when every member starts at ``generator``.

    With ``generator.pretrain.seed: null`` member k starts where the solo run of seed + k starts (its own initial
    weights and pretraining, cached per seed), so seed intervals include the pretraining variation; ``generator``
    (built for ``seed``) is member 0. A pinned pretraining seed, or a family without pretraining, shares one start.
    """
    size = int(cfg.get("seeds", 1))
    if size <= 1 or not pretrain_follows_seed(cfg):
        return None
    return [generator] + [instantiate_group(generator_node(cfg, k), "generator", task=task) for k in range(1, size)]


def optimizer_config(cfg: DictConfig) -> dict[str, Any]:
    """The optimizer config with ``lr``/``schedule`` null resolved to the generator family's defaults."""
    opt = OmegaConf.to_container(cfg.optimizer, resolve=True)
    if opt.get("lr") is None:
        opt["lr"] = cfg.generator.get("default_lr", 0.01)
    if opt.get("schedule") is None:
        opt["schedule"] = cfg.generator.get("default_schedule", "constant")
    return opt


def make_logger(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> Any:
    """The run's Lightning logger (False for none). ``resume_step``: the step a resumed run restarts from; the CSV
    log keeps its rows up to that step (Lightning would delete the file)."""
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        return _csv_logger(run_dir, resume_step)
    # W&B: one run per seed, written from the run's files when it ends (ptforget.wandb_runs), not a live logger
    check_choice(cfg.logger.get("mode", "offline"), "wandb_mode", WANDB_MODES)
    if not os.environ.get("WANDB_MODE", "x").strip():
        del os.environ["WANDB_MODE"]  # set but empty: wandb's settings would reject it with a long traceback
    return False


def _csv_logger(run_dir: Path, resume_step: int | None) -> Any:
    from lightning.pytorch.loggers import CSVLogger

    # every chunk's rows go to disk at once (flush_logs_every_n_steps=1), so a crash loses none of them
    logger = CSVLogger(save_dir=str(run_dir), name="", version="lightning", flush_logs_every_n_steps=1)
    path = Path(logger.log_dir) / "metrics.csv"
    kept = _csv_rows_until(path, resume_step) if resume_step is not None else []
    with warnings.catch_warnings():  # "previous log files will be deleted": the rows to keep are in `kept`
        warnings.simplefilter("ignore")
        writer = logger.experiment
    if kept:
        writer.metrics = kept
        writer.metrics_keys = sorted({k for r in kept for k in r})
        writer.save()
    return logger


def _csv_rows_until(path: Path, step: int) -> list[dict[str, Any]]:
    """The rows of a Lightning metrics.csv logged at steps <= ``step`` (a resumed run logs the later ones again)."""
    import csv

    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    kept = []
    for r in rows:
        try:
            ok = int(float(r.get("step") or "nan")) <= step
        except ValueError:
            ok = False
        if ok:
            kept.append({k: v for k, v in r.items() if k is not None})
    return kept


#: how long ``logger.mode=online`` waits for the W&B server before logging offline instead
WANDB_PROBE_S = 5.0


def wandb_reachable(timeout: float = WANDB_PROBE_S) -> bool:
    """Whether a TCP connection to the W&B server (or the HTTPS proxy in the way) opens within ``timeout`` s.

    Run in a thread, so that a name lookup that hangs is cut off too.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    target = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get(
        "WANDB_BASE_URL", "https://api.wandb.ai")
    url = urlparse(target if "://" in target else f"http://{target}")
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def build_optimizer(params: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or SGD over the generator's parameter groups (their learning-rate multipliers are kept).

    The fused implementation (one kernel for all parameters; CPU and CUDA) where every parameter is a floating
    tensor on one device: the same update rule, far fewer dispatches for many tiny tensors.
    """
    name = check_choice(cfg.get("name", "adam"), "optimizer.name", OPTIMIZERS)
    tensors = [p for g in params for p in g["params"]]
    fused = bool(tensors) and len({p.device for p in tensors}) == 1 and all(p.is_floating_point() for p in tensors)
    if name == "adam":
        return torch.optim.Adam(params, betas=tuple(cfg.get("betas", (0.9, 0.999))),
                                weight_decay=float(cfg.get("weight_decay", 0.0)), fused=fused or None)
    return torch.optim.SGD(params, momentum=float(cfg.get("momentum", 0.0)),
                           weight_decay=float(cfg.get("weight_decay", 0.0)), fused=fused or None)


def finish_logger(logger: Any) -> None:
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()


def quiet_lightning() -> None:
    """Lightning's start-up banners are noise for many tiny runs."""
    import lightning  # noqa: F401  (its import sets these loggers to INFO: import first, then quiet them)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LitLogger.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # on a host with srun, Lightning suggests launching with it, 2-3 times per run; ptforget runs its own jobs
    warnings.filterwarnings("ignore", message=".*`srun` command is available on your system.*")


#: Lightning's gradient-clipping keys, applied by the module (manual optimization; per member with batched seeds)
CLIP_KEYS = ("gradient_clip_val", "gradient_clip_algorithm")


def grad_clip_config(cfg: DictConfig | dict) -> tuple[float | None, str]:
    """(max norm or value, 'norm' | 'value') from ``trainer.gradient_clip_val`` / ``gradient_clip_algorithm``."""
    trainer = cfg["trainer"]
    val = trainer.get("gradient_clip_val")
    algo = trainer.get("gradient_clip_algorithm") or "norm"
    check_choice(algo, "trainer.gradient_clip_algorithm", ("norm", "value"))
    check(val is None or (is_number(val) and val > 0), "trainer.gradient_clip_val", val, "null or a finite number > 0")
    return (float(val) if val is not None else None), algo


def make_trainer(cfg: DictConfig, logger: Any = False) -> Any:
    """The Lightning Trainer of a run: one epoch of chunks (the step budget is the module's), no Lightning
    checkpoints (ours are ``last.ckpt``), no validation loop."""
    import lightning as L

    _cache_callback_entry_points()
    return L.Trainer(logger=logger, enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, max_epochs=1, max_steps=-1, **trainer_kwargs(cfg))


def _cache_callback_entry_points() -> None:
    """Lightning scans every installed distribution's entry points for callback factories on each Trainer (a few
    ms per run, most of a short run's Trainer set-up); the installed set does not change within a process, so the
    scan's answer is kept for the process."""
    from lightning.fabric.utilities import registry

    if getattr(registry.entry_points, "ptforget_cached", False):
        return
    scan = registry.entry_points

    @functools.cache
    def cached(**kw: Any) -> Any:
        return tuple(scan(**kw))

    cached.ptforget_cached = True  # type: ignore[attr-defined]
    registry.entry_points = cached


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Trainer options from the config; the step budget is ours (chunks), the progress bar is automatic."""
    kw = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in ("max_steps", *CLIP_KEYS):
        kw.pop(key, None)
    acc = kw.pop("accumulate_grad_batches", 1)
    check(acc == 1, "trainer.accumulate_grad_batches", acc,
          "1 (every step draws fresh samples: raise objective.batch for a larger batch)")
    if kw.get("enable_progress_bar") is None:
        kw["enable_progress_bar"] = sys.stderr.isatty() and not os.environ.get("CI") and not cfg.quiet
    if kw.pop("enable_progress_bar"):  # our bar counts optimizer steps (Lightning's would count chunks)
        from ptforget.progress import step_progress

        gen = str(cfg.generator.get("_target_", "")).rsplit(".", 1)[-1]
        obj = str(cfg.objective.get("_target_", "")).rsplit(".", 1)[-1]
        kw["callbacks"] = [step_progress(f"{gen} / {obj}")]
    kw["enable_progress_bar"] = False
    if kw.get("devices", 1) == 1 and kw.get("accelerator") in ("auto", "gpu", "cuda") and \
            torch.cuda.device_count() > 1:
        kw["devices"] = [_job_number() % torch.cuda.device_count()]  # parallel sweep jobs spread over the GPUs
    return kw


def _job_number() -> int:
    try:
        from hydra.core.hydra_config import HydraConfig

        return int(HydraConfig.get().job.num or 0)
    except Exception:
        return 0
