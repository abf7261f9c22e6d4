"""Validation, the one owner: reject a bad config with one ConfigError before anything is written.

``preflight(cfg)`` checks a composed train config cheaply, section by section: the top-level keys (seeds,
threads, step budget, study name, logger), every number (no NaN/inf), the keys of the groups without a
constructor (optimizer, logger, paths, limits), the memory the run will need (``ptforget.resources``, against
``limits.memory_gb``), the task, generator and objective (constructed as a run would, with pretraining off), the
objective against the generator family, the optimizer, the Lightning trainer arguments (and, for a run on this
host, its devices) and the output directories. ``ptforget.cli`` runs it on every command-line config before Hydra
creates a run directory; for a sweep it passes ``changed`` (the swept key and what interpolates it), so that a
value is checked by the sections that read it and 3,000 seeds take milliseconds, not minutes.
``validate_theory``, ``validate_check`` and ``validate_hydra`` do the same for the other entry points and for
Hydra's own settings (run and sweep directories, the launcher).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import re
import shutil
import types
import typing
from collections.abc import Callable, Collection, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ptforget import build, resources
from ptforget.errors import ConfigError, check, check_choice, is_int, is_number
from ptforget.io import dir_problem
from ptforget.tasks import MIN_DELTA, check_separation

#: accelerators a run may ask for (Lightning's names); whether the device exists is checked where the job runs
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

#: numeric keys where +inf is a meaningful value (OAPL: lag = inf is a fixed reference)
INF_OK = ("objective.lag",)
#: groups that go to a constructor through ``_target_``
BUILT_GROUPS = ("task", "generator", "objective")
#: the keys of the groups that have no constructor to check them
GROUP_KEYS = {
    "optimizer": ("name", "lr", "betas", "weight_decay", "schedule", "momentum"),
    "logger": ("kind", "project", "mode", "group", "entity"),
    "paths": ("output_dir", "cache_dir"),
    "limits": ("memory_gb", "time_s"),
}
#: prefixes under which a ``+key=value`` override may add a key, per entry point: a group's constructor (or
#: Lightning's Trainer, or the TheoryConfig) checks it; anywhere else an added key would change nothing but the
#: run's hash, so it is refused
ADDABLE = {"train": ("task.", "generator.", "objective.", "trainer."),
           "theory": ("theory.", "task.", "generator.", "objective.", "trainer."),
           "check": ()}
#: a study names a folder under the output directory: one path component
STUDY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
#: the longest study name (a folder name, with room for what the tool appends to names inside it)
MAX_STUDY = 200
#: Adam moves every parameter by up to lr per step: above this a run only jumps around (it never diverges)
ADAM_MAX_LR = 1.0
#: seeds go to torch.manual_seed, which takes 64-bit integers; members use seed .. seed + seeds - 1
MAX_SEED = 2**63 - 1
#: the check sets these keys for its claims itself: a train_override of one would be silently replaced
CHECK_OWNED = ("task", "generator", "objective", "optimizer", "seed", "seeds", "trainer.max_steps", "eval_every",
               "n_eval", "logger", "quiet", "threads", "study")
#: Hydra launchers whose jobs run on this host (devices are checked here); others (SLURM) check on their nodes
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher")


class _View:
    """A config being validated, as a DictConfig and as its resolved plain form: each is made from the other once,
    and only when a section needs it (a sweep hands in the plain form: reading it is a hundred times faster)."""

    def __init__(self, cfg: DictConfig | dict, local: bool) -> None:
        self.local = local
        if isinstance(cfg, DictConfig):
            self.cfg = cfg
        else:
            self.container = cfg

    @cached_property
    def container(self) -> dict[str, Any]:
        return resolved(self.cfg)

    @cached_property
    def cfg(self) -> DictConfig:
        return OmegaConf.create(self.container)


Section = tuple[tuple[str, ...], Callable[[_View], None]]


def preflight(cfg: DictConfig | dict, changed: Collection[str] | None = None, local: bool = True) -> None:
    """Validate a composed train config; raise ConfigError (key, value, what is allowed) on the first problem.

    ``cfg``: the composed config, or its resolved plain form (``resolved``). ``changed``: only these keys differ
    from a config that passed (a sweep value; see ``affected_keys``), so only the sections that read them run.
    ``local``: the run executes on this host, so its devices must exist here.
    """
    view = _View(cfg, local)
    if changed is None:
        check_finite(view.container)
    else:
        check_finite_at(view.container, changed)
    for deps, section in TRAIN_SECTIONS:
        if changed is None or touches(deps, changed):
            section(view)


preflight.incremental = True  # type: ignore[attr-defined]  (the command line may hand it changed keys)


def with_values(container: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the resolved ``container`` with ``values`` (dotted key -> plain value) set; only the dicts on the
    way to each key are copied."""
    out = dict(container)
    for key in sorted(values, key=len):
        node, parts = out, key.split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = values[key]
    return out


def reread(cfg: DictConfig, keys: Collection[str]) -> dict[str, Any]:
    """The resolved values of ``cfg`` at ``keys`` (None where one does not resolve: its section says why)."""
    out = {}
    for key in keys:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
            if isinstance(value, DictConfig) or OmegaConf.is_list(value):
                value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException:
            value = None
        out[key] = value
    return out


def touches(deps: Collection[str], changed: Collection[str]) -> bool:
    """Whether a changed key is one of ``deps``, inside one, or contains one."""
    return any(c == d or c.startswith(d + ".") or d.startswith(c + ".") for c in changed for d in deps)


_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def affected_keys(cfg: DictConfig, key: str) -> set[str]:
    """``key`` and every key whose value interpolates it, directly or through other keys (``${paths.cache_dir}``
    in ``generator.cache_dir``): what a new value of ``key`` can change."""
    refs: list[tuple[str, list[str]]] = []
    for k, v in leaves(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(v, str) and "${" in v:
            refs.append((k, _REF.findall(v)))
    out = {key}
    grew = True
    while grew:
        grew = False
        for k, targets in refs:
            if k not in out and touches(targets, out):
                out.add(k)
                grew = True
    return out


# ---------------------------------------------------------------------------------------------- train sections
def _top(view: _View) -> None:
    validate_top(view.container)
    validate_loop(view.container)
    validate_logger(view.container)


def _group_keys(view: _View) -> None:
    for group, keys in GROUP_KEYS.items():
        node = view.container.get(group)
        if isinstance(node, dict):
            for k in node:
                check(k in keys, f"{group}.{k}", node.get(k), f"a key of {group}: " + ", ".join(map(repr, keys)))
    limit = (view.container.get("limits") or {}).get("memory_gb")
    check(limit is None or (is_number(limit) and limit > 0), "limits.memory_gb", limit,
          "null (half of this machine's memory) or a number of GB > 0")


def _memory(view: _View) -> None:
    check_memory(resources.run_memory(view.container), (view.container.get("limits") or {}).get("memory_gb"),
                 view.container, "the run")


def check_memory(terms: list[tuple[str, float]], limit_gb: Any, container: dict[str, Any], what: str) -> None:
    """Refuse when the estimated peak memory exceeds the limit, naming the key that drives the largest term."""
    limit = resources.memory_limit_bytes(limit_gb)
    key, big, total = resources.dominant(terms)
    if total > limit:
        raise ConfigError(key, _select(container, key), f"a value that keeps {what} within limits.memory_gb="
                          f"{limit / 1e9:.3g} GB ({what} would need about {total / 1e9:.3g} GB, "
                          f"{big / 1e9:.3g} GB of it from {key}; raise limits.memory_gb to allow more)")


def _select(container: dict[str, Any], key: str) -> Any:
    node: Any = container
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _model(view: _View) -> None:
    check_separation((view.container.get("task") or {}).get("delta"))
    check_mixture(view.container.get("generator") or {})
    task, generator, objective = build_light(view.cfg)
    objective.validate(generator, task)


def _optimizer(view: _View) -> None:
    opt = build.optimizer_config(view.cfg)
    validate_optimizer(opt)
    lr = opt.get("lr")
    check(opt.get("name", "adam") != "adam" or lr <= ADAM_MAX_LR, "optimizer.lr", lr,
          f"a number in (0, {ADAM_MAX_LR:g}] for adam (every step moves each parameter by up to lr)")


def _trainer(view: _View) -> None:
    validate_trainer(view.cfg, view.local)


def _paths(view: _View) -> None:
    container = view.container
    check_writable_dir(container["paths"]["output_dir"], "paths.output_dir")
    gen = container.get("generator") or {}
    if gen.get("cache_dir") and int((gen.get("pretrain") or {}).get("steps", 1)) > 0:
        key = "paths.cache_dir" if gen["cache_dir"] == container["paths"].get("cache_dir") else "generator.cache_dir"
        check_writable_dir(gen["cache_dir"], key)


#: the sections of a train preflight and the config keys each reads (cheap ones first: the memory estimate comes
#: before anything is constructed, so that no value can allocate gigabytes while it is being checked)
TRAIN_SECTIONS: list[Section] = [
    (("seed", "seeds", "threads", "trainer.max_steps", "logger", "checkpoint_every", "compile", "study",
      "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm", "eval_every", "n_eval", "quiet"), _top),
    (tuple(GROUP_KEYS), _group_keys),
    (("task", "generator", "objective", "seeds", "n_eval", "trainer.max_steps", "eval_every", "limits"), _memory),
    (BUILT_GROUPS, _model),
    (("optimizer", "generator"), _optimizer),
    (("trainer", "quiet"), _trainer),
    (("paths", "generator"), _paths),
]


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


def check_finite_at(container: dict[str, Any], keys: Collection[str]) -> None:
    """check_finite for the values at ``keys`` only (a sweep value and what interpolates it)."""
    for key in keys:
        for k, v in leaves(_select(container, key), key):
            if isinstance(v, float) and not math.isfinite(v) and not (math.isinf(v) and v > 0 and k in INF_OK):
                raise ConfigError(k, v, "a finite number")


def _plain(cfg: DictConfig | dict) -> dict[str, Any]:
    return cfg if isinstance(cfg, dict) else resolved(cfg)


def validate_top(cfg: DictConfig | dict) -> None:
    """The top-level keys of a train config (seeds, threads, step budget, study, logger, checkpoints, clipping)."""
    c = _plain(cfg)
    seed, seeds = c.get("seed"), c.get("seeds", 1)
    for key, value, lo in (("seed", seed, 0), ("trainer.max_steps", c["trainer"].get("max_steps"), 1),
                           ("seeds", seeds, 1)):
        check(is_int(value, lo), key, value, f"an integer >= {lo}")
    check(seed + seeds - 1 <= MAX_SEED, "seed", seed, f"an integer in [0, 2**63 - seeds] = [0, {MAX_SEED - seeds + 1}]"
          " (torch seeds are 64-bit)")
    threads, cores = c.get("threads"), max(os.cpu_count() or 1, 1)
    check(is_int(threads, 1) and threads <= 4 * cores, "threads", threads,
          f"an integer in [1, {4 * cores}] (this host has {cores} cores)")
    check_study(c.get("study", "default"))
    check_choice((c.get("logger") or {}).get("kind"), "logger.kind", build.LOGGERS)
    check_choice(c.get("wandb_mode", "offline"), "wandb_mode", build.WANDB_MODES)
    tags = c.get("tags") or []
    check(isinstance(tags, list) and all(isinstance(t, str | int | float) and not isinstance(t, bool) for t in tags),
          "tags", tags, "a list of labels, e.g. tags=[baseline,sgd]")
    check(isinstance(c.get("task_name", "train"), str) and bool(c.get("task_name", "train")), "task_name",
          c.get("task_name"), "a non-empty name, e.g. train")
    ce = c.get("checkpoint_every", 0)
    check(is_int(ce, 0), "checkpoint_every", ce, "an integer >= 0 (0 disables resume checkpoints)")
    check(isinstance(c.get("compile", False), bool), "compile", c.get("compile"), "true or false")
    build.grad_clip_config(c)


def check_study(study: Any, key: str = "study") -> None:
    """A study names one folder under the output directory: no '/', no '..', nothing that escapes it."""
    check(isinstance(study, str) and bool(STUDY_RE.match(study)) and ".." not in study, key, study,
          "a folder name: letters, digits and _ . = + - (no '/' or '..': it stays inside paths.output_dir)")
    check(len(study) <= MAX_STUDY, key, f"<{len(study)} characters>", f"a folder name of at most {MAX_STUDY} "
          "characters (the file system refuses longer names)")


def validate_loop(cfg: DictConfig | dict) -> None:
    ev, n_eval = cfg.get("eval_every"), cfg.get("n_eval")
    check(is_int(ev, 1), "eval_every", ev, "an integer >= 1")
    check(is_int(n_eval, 16), "n_eval", n_eval, "an integer >= 16")
    check(isinstance(cfg.get("quiet", False), bool), "quiet", cfg.get("quiet"), "true or false")


#: the values wandb accepts in the WANDB_MODE environment variable
WANDB_ENV_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")


def validate_logger(cfg: DictConfig | dict) -> None:
    logger = cfg["logger"]
    if logger.get("kind") != "wandb":
        return
    check_choice(logger.get("mode", "offline"), "wandb_mode", build.WANDB_MODES)
    check(importlib.util.find_spec("wandb") is not None, "logger.kind", "wandb",
          "'csv' or 'none' (wandb is not installed: pip install 'ptforget[wandb]')")
    env = os.environ.get("WANDB_MODE")
    check(env is None or env.strip() == "" or env.strip() in WANDB_ENV_MODES, "WANDB_MODE (environment)", env,
          "unset, empty, or one of " + ", ".join(map(repr, WANDB_ENV_MODES)))


def check_mixture(gen: dict[str, Any]) -> None:
    """A Gaussian mixture's component count against its weight clip (the constructor would blame the clip)."""
    if "GaussianMixture" not in str(gen.get("_target_", "")):
        return
    k, clip = gen.get("components", 2), gen.get("weight_clip", 1e-3)
    if is_int(k, 2) and is_number(clip) and 0 < clip < 0.25:
        top = math.ceil(0.5 / clip) - 1
        check(k <= top, "generator.components", k, f"an integer in [2, {top}] (each weight is clipped to at least "
              f"generator.weight_clip={clip:g}, so K weights need K * clip < 1/2; lower the clip for more)")


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


def validate_trainer(cfg: DictConfig, local: bool = True) -> None:
    """The trainer arguments: their types (Lightning's annotations), the values Lightning lets through, the devices
    where the run executes (``local``: on this host), then the Trainer constructed as a run would (nothing is
    written); its complaint names the key."""
    build.quiet_lightning()
    given = OmegaConf.to_container(cfg.trainer, resolve=True)
    accel = given.get("accelerator", "auto")
    check_choice(accel, "trainer.accelerator", ACCELERATORS)
    check_trainer_values(given)
    if local:
        check_local_devices(accel, given.get("devices", 1))
    # The Trainer is built on the CPU: a SLURM/submitit sweep is launched from a host without the GPUs its jobs
    # will get (their devices are checked in the job, where this runs again with local=True).
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
        if "unexpected keyword argument" in msg:
            bad = msg.split("'")[-2] if "'" in msg else "?"
            raise ConfigError(f"trainer.{bad}", given.get(bad), "a keyword of lightning.Trainer") from None
        named = [k for k in given if f"{k}=" in msg or f"`{k}`" in msg] or [k for k in given if k in msg]
        key = named[0] if named else None
        raise ConfigError(f"trainer.{key}" if key else "trainer", given.get(key) if key else given,
                          f"a value Lightning accepts ({msg})") from None


def check_trainer_values(given: dict[str, Any]) -> None:
    """Types against lightning.Trainer's annotations, then the ranges Lightning does not check itself."""
    import lightning as L

    try:
        hints = typing.get_type_hints(L.Trainer.__init__)
    except Exception:
        hints = {}
    for key, value in given.items():
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(f"trainer.{key}", value, _describe(hints[key]))
    for key in ("log_every_n_steps",):
        if given.get(key) is not None:
            check(is_int(given[key], 1), f"trainer.{key}", given[key], "an integer >= 1")
    devices = given.get("devices", 1)
    ok = (devices == "auto" or devices == -1 or is_int(devices, 1)
          or (isinstance(devices, list) and devices and all(is_int(d, 0) for d in devices))
          or (isinstance(devices, str) and re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*,?", devices) is not None))
    check(ok, "trainer.devices", devices, "an integer >= 1, -1 (all), 'auto', or a list of device indices")
    one = devices == 1 or (isinstance(devices, list) and len(devices) == 1) or (
        isinstance(devices, str) and len([d for d in devices.split(",") if d.strip()]) == 1)
    check(one, "trainer.devices", devices, "1 or a list of one device index (a run is one process: Lightning "
          "would start a second one into the same run folder; train seeds together with seeds=N, or jobs side by "
          "side with a sweep's launcher)")


def check_local_devices(accel: str, devices: Any) -> None:
    """The accelerator a run on this host asks for exists here, with enough devices."""
    import torch

    if accel in ("gpu", "cuda"):
        n = torch.cuda.device_count()
        check(n > 0, "trainer.accelerator", accel, "'cpu' or 'auto' (this host has no CUDA device; a SLURM launch "
              "checks on its nodes)")
        want = len(devices) if isinstance(devices, list) else devices if is_int(devices, 1) else 1
        check(want <= n, "trainer.devices", devices, f"at most {n} (the CUDA devices of this host)")
    elif accel == "mps":
        check(torch.backends.mps.is_available(), "trainer.accelerator", accel, "'cpu' or 'auto' (no MPS device)")
    elif accel == "tpu":
        check(importlib.util.find_spec("torch_xla") is not None, "trainer.accelerator", accel,
              "'cpu' or 'auto' (no TPU runtime here)")


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
    for key, lo in (("steps", 0), ("batch", 1)):
        if key in pre:
            check(is_int(pre[key], lo), f"generator.pretrain.{key}", pre[key], f"an integer >= {lo}")
    if pre.get("seed") is not None:  # null: the run's seed
        check(is_int(pre["seed"], 0) and pre["seed"] <= MAX_SEED, "generator.pretrain.seed", pre["seed"],
              f"an integer in [0, {MAX_SEED}], or null for the run's seed")
    if "lr" in pre:
        check(is_number(pre["lr"]) and pre["lr"] > 0, "generator.pretrain.lr", pre["lr"], "a finite number > 0")


def _construct(light: DictConfig, group: str, **kwargs: Any) -> Any:
    node = light.get(group)
    check(isinstance(node, DictConfig) and "_target_" in node, group, node, "a config group with a _target_")
    build.check_target(node, group)  # before anything of it is called, its signature read or its keys checked
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
            inner = _bad_entry(value, hint)
            if inner is not None:  # name the entry of a mapping, not the whole mapping
                raise ConfigError(f"{group}.{key}.{inner[0]}", inner[1], inner[2])
            raise ConfigError(f"{group}.{key}", value, _describe(hint))


def _bad_entry(value: Any, hint: Any) -> tuple[str, Any, str] | None:
    """(entry, its value, what is allowed) of the first wrong entry of a mapping whose hint types its values."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for h in options:
        if (typing.get_origin(h) is dict or h is dict) and isinstance(value, dict) and len(typing.get_args(h)) == 2:
            vh = typing.get_args(h)[1]
            for k, v in value.items():
                if not _matches(v, vh):
                    return str(k), v, _describe(vh)
    return None


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin is typing.Literal:
        return value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args))
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
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        inner = _describe(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return str(hint)


# ---------------------------------------------------------------------------------------------- directories
def check_writable_dir(path: Any, key: str) -> None:
    """The directory exists and is writable, or can be created: tried without leaving anything behind."""
    check(isinstance(path, str | os.PathLike) and str(path).strip() != "", key, path, "a writable directory")
    problem = dir_problem(path)
    shown = str(path) if len(str(path)) <= 160 else f"{str(path)[:60]}...<{len(str(path))} characters>"
    check(problem is None, key, shown, f"a writable directory (or one that can be created): {problem}")


# ---------------------------------------------------------------------------------------------- added keys
def check_added_keys(added: Collection[tuple[str, Any]], entry: str, cfg: DictConfig) -> None:
    """``+key=value`` overrides: only where a constructor (or Lightning, or the TheoryConfig) checks the key.

    ``added``: (key, value) of each addition; ``entry``: 'train', 'theory' or 'check'.
    """
    for key, value in added:
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or key.startswith(ADDABLE[entry]):
            continue
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = [str(k) for k in node if str(k) != "hydra" and str(k) != key.rpartition(".")[2]] if isinstance(
            node, DictConfig) else []
        where = f"'{parent}'" if parent else f"the {entry} config"
        raise ConfigError(key, value, f"an existing key of {where} (a new key here is read by nothing and would "
                          "only change the run's hash): " + ", ".join(map(repr, keys)))


# ---------------------------------------------------------------------------------------------- Hydra's settings
def launcher_is_local(hydra: DictConfig | dict | None) -> bool:
    """Whether the jobs of this launch run on this host (basic, joblib, submitit's local executor)."""
    target = str(((hydra or {}).get("launcher") or {}).get("_target_", "BasicLauncher"))
    return target.rsplit(".", 1)[-1] in LOCAL_LAUNCHERS


def validate_hydra(hydra: dict[str, Any], multirun: bool, run_dir_writable: bool = True) -> None:
    """Hydra's own settings (resolved ``hydra`` node): the run or sweep directory and the launcher's values.

    ``run_dir_writable``: check that the run directory can be written (the caller skips it for a finished run,
    which is only reported and so works in a read-only folder).
    """
    run_dir = (hydra.get("run") or {}).get("dir")
    if not multirun:
        check(isinstance(run_dir, str) and run_dir.strip() != "", "hydra.run.dir", run_dir,
              "a directory (an empty one would write into the current directory)")
        if run_dir_writable and hydra.get("output_subdir") is not None:  # Hydra writes .hydra/ there first
            check_writable_dir(run_dir, "hydra.run.dir")
    else:
        sweep = hydra.get("sweep") or {}
        check(isinstance(sweep.get("dir"), str) and sweep["dir"].strip() != "", "hydra.sweep.dir", sweep.get("dir"),
              "a directory (an empty one would write into the current directory)")
        check_writable_dir(sweep["dir"], "hydra.sweep.dir")
        sub = sweep.get("subdir")
        check(sub is None or (isinstance(sub, str) and sub.strip() != "" and not os.path.isabs(sub)
                              and ".." not in Path(sub).parts), "hydra.sweep.subdir", sub,
              "a relative folder name without '..' (each job stays inside hydra.sweep.dir)")
    launcher = hydra.get("launcher") or {}
    name = str(launcher.get("_target_", "")).rsplit(".", 1)[-1]
    if name == "JoblibLauncher":
        n = launcher.get("n_jobs")
        check(is_int(n, 1) or (isinstance(n, int) and not isinstance(n, bool) and n < 0), "hydra.launcher.n_jobs", n,
              "an integer >= 1, or -1 for one job per core (-2: all but one, ...)")
    elif name in ("LocalLauncher", "SlurmLauncher"):
        for key, lo in (("timeout_min", 1), ("nodes", 1), ("tasks_per_node", 1), ("cpus_per_task", 1),
                        ("gpus_per_node", 0), ("array_parallelism", 1), ("max_num_timeout", 0)):
            if key in launcher and launcher[key] is not None:
                check(is_int(launcher[key], lo), f"hydra.launcher.{key}", launcher[key], f"an integer >= {lo}")
        mem = launcher.get("mem_gb")
        check(mem is None or (is_number(mem) and mem > 0), "hydra.launcher.mem_gb", mem, "a number of GB > 0")


# ---------------------------------------------------------------------------------------------- other entry points
def _theory_model(cfg: DictConfig) -> None:
    """The model the predictions are for, checked as training checks it (every group's ``_target_``, the mixture's
    components, each constructor's values, the objective against the generator): the theory never predicts for a
    model that training would refuse to build."""
    check_separation((resolved(cfg).get("task") or {}).get("delta"))
    check_mixture(resolved(cfg).get("generator") or {})
    task, generator, objective = build_light(cfg)
    objective.validate(generator, task)


def validate_theory(cfg: DictConfig, changed: Collection[str] | None = None, local: bool = True) -> None:
    """A ptforget-theory config: finite numbers, the limits, the task (its own checks name the key), the theory
    fields, the memory and time the predictions need, a step the exact flows survive, the output's folder."""
    from ptforget.bridge import theory_config, theory_fields
    from ptforget.theory.budget import max_stable_lr, theory_budget

    container = resolved(cfg)
    check_finite(container)
    check(isinstance(container.get("theory", {}), dict), "theory", container.get("theory"),
          "a mapping of TheoryConfig fields, e.g. theory={kappa:2,gamma:0.5}")
    for k in cfg.get("limits") or {}:
        check(k in GROUP_KEYS["limits"], f"limits.{k}", cfg.limits[k], "a key of limits: 'memory_gb', 'time_s'")
    limits = container.get("limits") or {}
    mem, time_s = limits.get("memory_gb"), limits.get("time_s", 600)
    check(mem is None or (is_number(mem) and mem > 0), "limits.memory_gb", mem, "null or a number of GB > 0")
    check(is_number(time_s) and time_s > 0, "limits.time_s", time_s, "a number of seconds > 0")
    dim = (container.get("task") or {}).get("dim")
    if is_int(dim, 1):  # the task builds d x d matrices: the theory's own (1 + 2d)^2 ones bound d first
        check_memory([("task.dim", 8.0 * 8 * (1 + 2 * dim) ** 2)], mem, container, "the predictions")
    _theory_model(cfg)
    if cfg.get("claims", "all") not in ("all", "objective"):
        from ptforget.check import selected_claims

        check(OmegaConf.is_list(cfg.claims) and len(cfg.claims) > 0, "claims", cfg.claims,
              "'objective', 'all' or a non-empty list of claim ids, e.g. [P1,P10]")
        selected_claims(cfg)
    tc = theory_config(cfg, whitened=True)
    _, keys = theory_fields(cfg)
    budget = theory_budget(tc)
    field = budget["memory_driver"]
    check_memory([(keys.get(field, f"theory.{field}"), budget["bytes"])], mem, container, "the predictions")
    if budget["seconds"] > time_s:
        key = keys.get(budget["time_driver"], f"theory.{budget['time_driver']}")
        raise ConfigError(key, _select(container, key), f"a value that keeps the predictions within limits.time_s="
                          f"{time_s:g} s (they would take about {budget['seconds']:.3g} s; raise limits.time_s to "
                          "allow more)")
    top = max_stable_lr(tc)
    check(tc.lr < top, keys.get("lr", "theory.lr"), tc.lr, f"a step below {top:.3g} (gradient descent on the exact "
          "objective is unstable beyond 2 / the largest curvature)")
    if container.get("output") is not None:  # null: predictions.json in the run folder (hydra.run.dir, checked)
        check(isinstance(container["output"], str) and container["output"].strip() != "", "output",
              container["output"], "null (predictions.json in the run folder) or a file path")
        check(not Path(container["output"]).is_dir(), "output", container["output"],
              "a file path, not a folder (null: predictions.json in the run folder)")
        check_writable_dir(str(Path(container["output"]).parent), "output")


def validate_check(cfg: DictConfig, changed: Collection[str] | None = None, local: bool = True) -> None:
    """A ptforget-check config: threads, flags, the profile's counts and grids, the claims and generator families,
    the train_overrides (composed and preflighted once), the reporting options, the output dir."""
    from ptforget.check import validate_check_config

    container = resolved(cfg)
    check_finite(container)
    threads = cfg.get("threads", 1)
    check(is_int(threads, 1), "threads", threads, "an integer >= 1")
    for key in ("strict", "reuse", "batch_seeds", "dry_run"):
        check(isinstance(cfg.get(key, False), bool), key, cfg.get(key), "true or false")
    check_study(cfg.get("study", "check"))
    validate_check_config(cfg)
    # SLURM jobs run on the cluster's nodes: their devices are checked there, not on the login node
    remote = str(OmegaConf.select(cfg, "executor.cluster", default="")) == "slurm"
    if remote and local:
        check(shutil.which("sbatch") is not None, "executor", "submitit_slurm", "an executor this host can submit "
              "to: processes, inline or submitit_local (no sbatch on PATH; launch SLURM jobs from a login node)")
    _check_train_overrides(container.get("train_overrides"), local=local and not remote)
    check_choice(cfg.get("report_to", "none"), "report_to", ("none", "wandb"))
    check_choice(cfg.get("wandb_mode", "offline"), "wandb_mode", build.WANDB_MODES)
    check_writable_dir(container["paths"]["output_dir"], "paths.output_dir")


#: keys of a check profile and what each must be
PROFILE_INTS = ("eval_every", "exact_batch", "chen_seeds", "rate_max_steps")
PROFILE_LISTS = {
    "deltas": (lambda v: is_number(v) and MIN_DELTA <= v <= 26, f"Mahalanobis separations in [{MIN_DELTA:.3g}, 26]"),
    "method_deltas": (lambda v: is_number(v) and MIN_DELTA <= v <= 26,
                      f"Mahalanobis separations in [{MIN_DELTA:.3g}, 26]"),
    "replay_lambdas": (lambda v: is_number(v) and 0 <= v < 1, "replay fractions in [0, 1)"),
    "rkl_replay_lambdas": (lambda v: is_number(v) and 0 <= v < 1, "replay fractions in [0, 1)"),
    "batch_sizes": (lambda v: is_int(v, 1), "batch sizes (integers >= 1)"),
    "rate_deltas": (lambda v: is_number(v) and 0 < v <= 26, "Mahalanobis separations in (0, 26]"),
    "rate_betas": (lambda v: is_number(v) and 0 < v < 1, "old weights beta* in (0, 1)"),
    "starvation_batches": (lambda v: is_int(v, 1), "batch sizes (integers >= 1)"),
    "starvation_betas": (lambda v: is_number(v) and 0 < v < 1, "old weights beta* in (0, 1)"),
}
FAMILY_KEYS = ("seeds", "steps", "overrides", "sgd")


def check_profile(p: dict[str, Any]) -> None:
    """A check profile: its keys, counts, grids and per-family settings (seeds, steps, overrides, sgd)."""
    allowed = ("name", "families", "forgetting_threshold", "control_factor", "defer_underpowered", "gates",
               *PROFILE_INTS, *PROFILE_LISTS)
    for k in p:
        check(k in allowed, f"profile.{k}", p[k], "a key of profile: " + ", ".join(map(repr, allowed)))
    check(isinstance(p.get("name", ""), str), "profile.name", p.get("name"), "a string")
    for key in PROFILE_INTS:
        if key in p:
            check(is_int(p[key], 1), f"profile.{key}", p[key], "an integer >= 1")
    for key, (ok, allowed_text) in PROFILE_LISTS.items():
        if key in p:
            v = p[key]
            check(isinstance(v, list) and len(v) > 0 and all(ok(x) for x in v), f"profile.{key}", v,
                  f"a non-empty list of {allowed_text}")
    check(isinstance(p.get("defer_underpowered", False), bool), "profile.defer_underpowered",
          p.get("defer_underpowered"), "true or false")
    gates = p.get("gates", {})
    names = ("start_kl", "start_old_mass_rel", "plateau_fraction", "new_mode_error")
    check(isinstance(gates, dict), "profile.gates", gates, "a mapping of " + ", ".join(names))
    for k, g in gates.items():
        check(k in names, f"profile.gates.{k}", g, "a key of gates: " + ", ".join(map(repr, names)))
        check(is_number(g) and g > 0, f"profile.gates.{k}", g, "a finite number > 0")
    ft = p.get("forgetting_threshold", 0.1)
    check(is_number(ft) and 0 < ft < 1, "profile.forgetting_threshold", ft, "a fraction of beta* in (0, 1)")
    cf = p.get("control_factor", 3)
    check(is_number(cf) and 1 < cf <= 10, "profile.control_factor", cf,
          "a number in (1, 10]: a longer-run control trains this many times the run's steps")
    fams = p.get("families")
    check(isinstance(fams, dict) and fams, "profile.families", fams,
          "a mapping of generator family -> {seeds, steps, overrides, sgd}")
    for name, f in fams.items():
        key = f"profile.families.{name}"
        check(isinstance(f, dict), key, f, "a mapping with seeds, steps, overrides, sgd")
        for k in f:
            check(k in FAMILY_KEYS, f"{key}.{k}", f[k], "a key of a family: " + ", ".join(map(repr, FAMILY_KEYS)))
        for k in ("seeds", "steps"):
            check(is_int(f.get(k), 1), f"{key}.{k}", f.get(k), "an integer >= 1")
        ov = f.get("overrides", [])
        check(isinstance(ov, list) and all(isinstance(o, str) for o in ov), f"{key}.overrides", ov,
              "a list of training-config overrides")
        sgd = f.get("sgd")
        check(isinstance(sgd, dict), f"{key}.sgd", sgd, "a mapping with lr, batch, steps (plain SGD runs)")
        check(is_number(sgd.get("lr")) and sgd.get("lr") > 0, f"{key}.sgd.lr", sgd.get("lr"), "a finite number > 0")
        for k in ("batch", "steps"):
            check(is_int(sgd.get(k), 1), f"{key}.sgd.{k}", sgd.get(k), "an integer >= 1")
    check_chen_memory(p)
    # the largest batch a claim trains with is 4 x exact_batch samples (P7): it must fit in memory
    eb = p.get("exact_batch")
    if is_int(eb, 1):
        c = {"task": {"dim": 2}, "generator": {"_target_": "GaussianMixture"}, "objective": {"batch": 4 * eb}}
        key, big, total = resources.dominant(resources.run_memory(c))
        limit = resources.memory_limit_bytes(None)
        check(total <= limit, "profile.exact_batch", eb, f"a batch whose runs fit in memory (4 x exact_batch samples "
              f"need about {total / 1e9:.3g} GB, the limit is {limit / 1e9:.3g} GB)")


def check_chen_memory(p: dict[str, Any]) -> None:
    """Chen et al.'s simulation runs all ``profile.chen_seeds`` seeds at once: they must fit in memory."""
    if not is_int(p.get("chen_seeds"), 1):
        return
    from importlib import resources as files

    chen = OmegaConf.load(str(files.files("ptforget.conf") / "experiment" / "chen2025.yaml")).chen2025
    settings = OmegaConf.to_container(chen.settings, resolve=True)
    grid = max(int(s["grid"][2]) for s in settings.values())
    iterations = max(int(s["iterations"]) for s in settings.values())
    terms = resources.chen_memory(p["chen_seeds"], int(chen.samples), grid, iterations)
    limit = resources.memory_limit_bytes(None)
    total = resources.dominant(terms)[2]
    check(total <= limit, "profile.chen_seeds", p["chen_seeds"], f"a number of seeds whose simulation fits in "
          f"memory (about {total / 1e9:.3g} GB; the limit is {limit / 1e9:.3g} GB, half of this machine's)")


def generator_options() -> list[str]:
    """The generator families (the options of the ``generator`` config group)."""
    from importlib import resources as files

    return sorted(p.name.removesuffix(".yaml") for p in (files.files("ptforget.conf") / "generator").iterdir()
                  if p.name.endswith(".yaml"))


def _check_train_overrides(overrides: Any, local: bool = True) -> None:
    """The check's extra training overrides: strings, not keys the claims set themselves, and a train config that
    composes and passes preflight with them (composed once, with the default generator; ``local``: the jobs run
    on this host, so their devices must exist here)."""
    check(isinstance(overrides, list) and all(isinstance(o, str) for o in overrides), "train_overrides",
          overrides, "a list of key=value strings, e.g. '[\"trainer=gpu\"]'")
    if not overrides:
        return
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for i, text in enumerate(overrides):
        try:
            key = str(parser.parse_overrides([text])[0].key_or_group)
        except Exception:
            raise ConfigError(f"train_overrides.{i}", text, "key=value in Hydra's override grammar") from None
        owned = next((k for k in CHECK_OWNED if key == k or key.startswith(k + ".")), None)
        check(owned is None, f"train_overrides.{i}", text, "an override of a key the check does not set itself "
              f"(its claims set {', '.join(CHECK_OWNED)}; {key} would be replaced), e.g. trainer=gpu")
    if not GlobalHydra.instance().is_initialized():
        return
    try:
        train = compose("train", overrides=list(overrides))
        preflight(train, local=local)
    except ConfigError as err:
        raise ConfigError("train_overrides", overrides, f"overrides a train config accepts ({err})") from None
    except Exception as err:
        msg = " ".join(str(err).split()[:40])
        raise ConfigError("train_overrides", overrides, f"overrides a train config accepts ({msg})") from None
