"""Validation, the one owner: reject a bad config with one ConfigError before anything is written.

``preflight(cfg)`` checks a composed train config cheaply: the top-level keys, every number (no NaN/inf), the
optimizer, the Lightning trainer arguments, the task, generator and objective (constructed as a run would, but
with pretraining off), the objective against the generator family, and that the output directories can be
created. ``ptforget.cli`` runs it on every command-line config (each sweep value of a multirun) before Hydra
creates a run directory, and again inside the task function.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ptforget import build
from ptforget.errors import ConfigError, check, check_choice, is_int, is_number

#: accelerators a run may ask for (Lightning's names); whether the device exists is checked where the job runs
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

#: numeric keys where +inf is a meaningful value (OAPL: lag = inf is a fixed reference)
INF_OK = ("objective.lag",)
#: groups that go to a constructor through ``_target_``
BUILT_GROUPS = ("task", "generator", "objective")


def preflight(cfg: DictConfig) -> None:
    """Validate a composed train config; raise ConfigError (key, value, what is allowed) on the first problem."""
    container = resolved(cfg)
    validate_top(cfg)
    check_finite(container)
    validate_loop(cfg)
    validate_logger(cfg)
    task, generator, objective = build_light(cfg)
    objective.validate(generator, task)
    validate_optimizer(build.optimizer_config(cfg))  # these two import Lightning (seconds): after the cheap checks
    validate_trainer(cfg)
    check_writable_dir(container["paths"]["output_dir"], "paths.output_dir")
    gen = container.get("generator") or {}
    if gen.get("cache_dir") and int((gen.get("pretrain") or {}).get("steps", 1)) > 0:
        key = "paths.cache_dir" if gen["cache_dir"] == container["paths"].get("cache_dir") else "generator.cache_dir"
        check_writable_dir(gen["cache_dir"], key)


# ---------------------------------------------------------------------------------------------- generic checks
def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers, every interpolation resolved (a failing one names its key).

    Values that need a running Hydra job (``${hydra:...}``, e.g. the check's output_dir) become None.
    """
    raw = OmegaConf.to_container(cfg, resolve=False)
    _drop_hydra_interpolations(raw)
    try:
        return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", None) or "config")
        value: Any = None
        try:
            value = raw
            for part in key.split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            value = None
        msg = str(getattr(err, "msg", None) or err).splitlines()[0]
        raise ConfigError(key, value, f"a resolvable value ({msg})") from None


def _drop_hydra_interpolations(node: Any) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in list(items):
        if isinstance(v, str) and "${hydra:" in v:
            node[k] = None
        else:
            _drop_hydra_interpolations(v)


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a plain container."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from leaves(v, f"{prefix}.{i}")
    else:
        yield prefix, node


def check_finite(container: dict[str, Any]) -> None:
    """No NaN anywhere, and no inf except where inf means something (INF_OK)."""
    for key, v in leaves({k: v for k, v in container.items() if k != "hydra"}):
        if isinstance(v, float) and not math.isfinite(v):
            if math.isinf(v) and v > 0 and key in INF_OK:
                continue
            raise ConfigError(key, v, "a finite number")




def validate_top(cfg: DictConfig) -> None:
    """The top-level keys of a train config (seeds, threads, step budget, logger, checkpoints, clipping)."""
    for key, value, lo in (("seed", cfg.get("seed"), 0), ("threads", cfg.get("threads"), 1),
                           ("trainer.max_steps", cfg.trainer.max_steps, 1), ("seeds", cfg.get("seeds", 1), 1)):
        check(is_int(value, lo), key, value, f"an integer >= {lo}")
    check_choice(cfg.logger.kind, "logger.kind", build.LOGGERS)
    ce = cfg.get("checkpoint_every", 0)
    check(is_int(ce, 0), "checkpoint_every", ce, "an integer >= 0 (0 disables resume checkpoints)")
    check(isinstance(cfg.get("compile", False), bool), "compile", cfg.get("compile"), "true or false")
    build.grad_clip_config(cfg)


def validate_loop(cfg: DictConfig) -> None:
    ev, n_eval = cfg.get("eval_every"), cfg.get("n_eval")
    check(is_int(ev, 1), "eval_every", ev, "an integer >= 1")
    check(is_int(n_eval, 16), "n_eval", n_eval, "an integer >= 16")
    check(isinstance(cfg.get("quiet", False), bool), "quiet", cfg.get("quiet"), "true or false")


def validate_logger(cfg: DictConfig) -> None:
    if cfg.logger.kind != "wandb":
        return
    check_choice(cfg.logger.get("mode", "offline"), "logger.mode", build.WANDB_MODES)
    check(importlib.util.find_spec("wandb") is not None, "logger.kind", "wandb",
          "'csv' or 'none' (wandb is not installed: pip install 'ptforget[wandb]')")


def validate_optimizer(cfg: dict[str, Any]) -> None:
    """An optimizer config (``build.optimizer_config``): name, lr, schedule, momentum, weight decay, betas."""
    check_choice(cfg.get("name", "adam"), "optimizer.name", build.OPTIMIZERS)
    lr = cfg.get("lr")
    check(is_number(lr) and lr > 0, "optimizer.lr", lr, "a finite number > 0")
    check_choice(cfg.get("schedule", "constant"), "optimizer.schedule", build.SCHEDULES)
    mom = cfg.get("momentum", 0.0)
    check(is_number(mom) and 0 <= mom < 1, "optimizer.momentum", mom, "a number in [0, 1)")
    wd = cfg.get("weight_decay", 0.0)
    check(is_number(wd) and wd >= 0, "optimizer.weight_decay", wd, "a finite number >= 0")
    if cfg.get("name", "adam") == "adam":
        betas = cfg.get("betas", [0.9, 0.999])
        check(isinstance(betas, list | tuple) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas),
              "optimizer.betas", betas, "two numbers in [0, 1), e.g. [0.9,0.999]")


def validate_trainer(cfg: DictConfig) -> None:
    """Construct the Lightning Trainer as a run would (nothing is written); its complaint names the key."""
    build.quiet_lightning()
    accel = cfg.trainer.get("accelerator", "auto")
    check_choice(accel, "trainer.accelerator", ACCELERATORS)
    # The devices themselves are checked where the run executes: a SLURM/submitit sweep is launched from a host
    # without the GPUs its jobs will get, so the Trainer is built here on the CPU, for its other arguments.
    on_cpu = cfg.copy()
    with open_dict(on_cpu):
        on_cpu.trainer.accelerator = "cpu"
        on_cpu.trainer.devices = 1
    try:
        build.make_trainer(on_cpu)
    except ConfigError:
        raise
    except Exception as err:  # Lightning raises TypeError/ValueError/MisconfigurationException
        msg = " ".join(str(err).split())
        given = OmegaConf.to_container(cfg.trainer, resolve=True)
        if "unexpected keyword argument" in msg:
            bad = msg.split("'")[-2] if "'" in msg else "?"
            raise ConfigError(f"trainer.{bad}", given.get(bad), "a keyword of lightning.Trainer") from None
        named = [k for k in given if f"{k}=" in msg or f"`{k}`" in msg] or [k for k in given if k in msg]
        if not named and "accelerator" in given and ("backend" in msg or "accelerator" in msg.lower()):
            named = ["accelerator"]
        key = named[0] if named else None
        raise ConfigError(f"trainer.{key}" if key else "trainer", given.get(key) if key else given,
                          f"a value Lightning accepts ({msg})") from None


# ---------------------------------------------------------------------------------------------- construction
def build_light(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """(task, generator, objective) as ``build.build`` makes them, but with pretraining and its cache off."""
    validate_pretrain((OmegaConf.to_container(cfg.generator, resolve=True) or {}).get("pretrain"))
    light = build.without_pretraining(cfg)
    task = _construct(light, "task")
    generator = _construct(light, "generator", task=task)
    objective = _construct(light, "objective")
    for group in BUILT_GROUPS:  # values a constructor let through but that have the wrong type
        check_types(light[group], group)
    return task, generator, objective


def validate_pretrain(pre: Any) -> None:
    if pre is None:
        return
    check(isinstance(pre, dict), "generator.pretrain", pre, "a mapping with steps, batch, lr, seed (or null)")
    for key, lo in (("steps", 0), ("batch", 1), ("seed", 0)):
        if key in pre:
            check(is_int(pre[key], lo), f"generator.pretrain.{key}", pre[key], f"an integer >= {lo}")
    if "lr" in pre:
        check(is_number(pre["lr"]) and pre["lr"] > 0, "generator.pretrain.lr", pre["lr"], "a finite number > 0")


def _construct(light: DictConfig, group: str, **kwargs: Any) -> Any:
    node = light.get(group)
    check(isinstance(node, DictConfig) and "_target_" in node, group, node, "a config group with a _target_")
    check_keys(node, group, passed=tuple(kwargs))
    try:
        return build.instantiate_group(node, group, **kwargs)
    except ConfigError:
        raise
    except Exception as err:  # a constructor tripped over a value of the wrong type: name it if we can
        check_types(node, group)
        msg = " ".join(str(err).split())
        if build.target_class(node) is None:
            raise ConfigError(f"{group}._target_", node.get("_target_"), "an importable class") from None
        raise ConfigError(group, OmegaConf.to_container(node, resolve=True),
                          f"values accepted by {node.get('_target_')} ({type(err).__name__}: {msg})") from None


def check_keys(node: DictConfig, group: str, passed: tuple[str, ...] = ()) -> None:
    """Every key of a group must be an argument of its constructor (a clearer message than the TypeError)."""
    target = build.target_class(node)
    if target is None:
        return
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [k for k in params if k not in passed and not k.startswith("_") and k != "self"]
    for key in node:
        if str(key).startswith("_") or key in build.RESERVED_KEYS or key in params:
            continue
        value = OmegaConf.to_container(node, resolve=True)[key]
        raise ConfigError(f"{group}.{key}", value,
                          f"a key of {node.get('_target_')}: " + ", ".join(repr(k) for k in allowed))


def check_types(node: DictConfig, group: str) -> None:
    """Each key of a group must match the type annotation of its constructor's argument."""
    target = build.target_class(node)
    try:
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:
        return
    spec = OmegaConf.to_container(node, resolve=True)
    for key, value in spec.items():
        if key.startswith("_") or key not in hints:
            continue
        hint = hints[key]
        if not _matches(value, hint):
            raise ConfigError(f"{group}.{key}", value, _describe(hint))


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # OmegaConf keeps a quoted 'inf' as a string; constructors that take inf accept it
        return (isinstance(value, int | float) and not isinstance(value, bool)) or value in ("inf", ".inf")
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return all(_matches(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(v, args[1]) for v in value.values())
    return True  # anything else (objects passed by code, Literal, ...) is not checked here


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args]
        return " or ".join(dict.fromkeys(parts))
    if hint in _NAMES:
        return _NAMES[hint]
    if origin in (list, tuple) or hint in (list, tuple):
        inner = _describe(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return str(hint)


# ---------------------------------------------------------------------------------------------- directories
def check_writable_dir(path: Any, key: str) -> None:
    """The directory exists and is writable, or can be created: tried without leaving anything behind."""
    check(isinstance(path, str | os.PathLike) and str(path) != "", key, path, "a writable directory")
    p = Path(path).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    anc = p
    try:
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        ok = anc.is_dir()
        if ok:
            tmp = tempfile.mkdtemp(prefix=".ptforget-preflight-", dir=anc)
            os.rmdir(tmp)
    except OSError:
        ok = False
    check(ok, key, str(path), "a writable directory (or one that can be created)")


# ---------------------------------------------------------------------------------------------- other entry points
def validate_theory(cfg: DictConfig) -> None:
    """A ptforget-theory config: finite numbers, the task (its own checks name the key), the theory fields."""
    from ptforget.bridge import theory_config

    container = resolved(cfg)
    check_finite(container)
    build.instantiate_group(cfg.task, "task")
    try:
        theory_config(cfg)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError("theory", OmegaConf.to_container(cfg.get("theory") or {}), str(err)) from None
    check_writable_dir(str(Path(container["output"]).parent), "output")


def validate_check(cfg: DictConfig) -> None:
    """A ptforget-check config: threads, the profile's counts, the claims, the reporting options, the output dir."""
    from ptforget.check import validate_check_config

    container = resolved(cfg)
    check_finite(container)
    threads = cfg.get("threads", 1)
    check(is_int(threads, 1), "threads", threads, "an integer >= 1")
    validate_check_config(cfg)
    check_choice(cfg.get("report_to", "none"), "report_to", ("none", "wandb"))
    check_choice(cfg.get("wandb_mode", "offline"), "wandb_mode", build.WANDB_MODES)
    check_writable_dir(container["paths"]["output_dir"], "paths.output_dir")
