"""Console entry points. Bad input prints one line naming the key and what is allowed, and exits with 2.

Every entry point checks its command line before Hydra starts (Hydra creates the run directory before the task
function runs, and prints multi-line errors): the overrides are parsed and composed with Hydra's compose API,
Hydra's errors are turned into one ``ptforget: error: invalid config: key=value; allowed: ...`` line, Hydra's own
settings (run / sweep directory, launcher) and the composed config are validated (``ptforget.validate``). A
multirun checks each group option and each swept value once (a value through the validation sections that read
its key: thousands of values take well under a second), and first composes the config as Hydra does, without its
sweeps. Then the run folder: one holding another config's run, or used by another process, is refused; one
holding this config's finished run is reported without starting Hydra (nothing is written, so a read-only
folder works). Hydra's own flags (``--help``, ``--cfg``, ``--info``, ...) pass through unchecked.

Exit status: 0 done, 2 bad input, 1 a fault of the environment (full disk, read-only folder: one line),
128 + N a signal (143 for SIGTERM: the run saved ``last.ckpt``; the same command resumes it).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from ptforget import interrupt, plugins, validate
from ptforget.errors import ConfigError, out_of_memory
from ptforget.io import LockBusy, environment_error, file_lock, lock_holder, planted_link

CONFIG_MODULE = "ptforget.conf"
#: flags after which Hydra prints something and runs nothing (or loads configs from elsewhere): not checked
PASS_THROUGH_FLAGS = ("help", "hydra_help", "version", "cfg", "info", "shell_completion", "experimental_rerun",
                      "config_path")
#: the sweep subdir under which ptforget can find job k (Hydra's default): other layouts skip the job checks
DEFAULT_SUBDIR = "${hydra.job.num}"
Validator = Callable[..., None]


def guarded(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a ConfigError into one clear stderr line and exit status 2, a full disk or read-only folder into one
    line and exit status 1."""

    def wrapper(cfg: DictConfig) -> Any:
        try:
            with interrupt.submitit_exit():  # in a submitit job: exit 128 + N, or requeue on preemption
                return fn(cfg)
        except ConfigError as err:
            fail(err)
        except Exception as err:
            fail_fatal(err)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def fail(err: ConfigError) -> None:
    """Print the error as one line on stderr and exit with status 2."""
    print("ptforget: error: " + " ".join(str(err).split()), file=sys.stderr)
    sys.exit(2)


def fail_environment(err: OSError) -> None:
    """A fault of the environment (full disk, read-only folder): one line on stderr, exit status 1."""
    name = str(getattr(err, "filename", None) or "")
    where = f" in {name if len(name) <= 200 else name[:80] + f'...<{len(name)} characters>'}" if name else ""
    print(f"ptforget: error: cannot write{where}: {err.strerror or err}; the files written before are kept "
          "(the same command resumes once the folder is writable and has room)", file=sys.stderr)
    sys.exit(1)


def fail_fatal(err: Exception) -> None:
    """A fault of the environment (full disk, read-only folder, a planted link) or an allocation failure: one line
    and exit status 1; anything else is re-raised (a bug shows its traceback)."""
    env = environment_error(err)
    if env is not None:
        fail_environment(env)
    mem = out_of_memory(err)
    if mem is None:
        raise err
    print(f"ptforget: error: {mem}; the files written before are kept (lower the sizes in the config, or set "
          "limits.memory_gb to what this process may really use)", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------- command line
class _ArgError(Exception):
    pass


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> None:
        raise _ArgError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_args(list(argv))


def _is_hydra(override: Any) -> bool:
    key = str(override.key_or_group)
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


@dataclass
class Preflight:
    """What the command-line check found: the base job config, Hydra's settings, the job list of a multirun."""

    config_name: str
    multirun: bool
    job: DictConfig
    hydra: dict[str, Any]
    raw_dirs: dict[str, str]
    jobs: list[list[str]] = field(default_factory=list)
    n_checked: int = 1
    finished: dict[str, Any] | None = None  # this config's finished run in the run dir
    lock_path: Path | None = None
    pin: tuple[str, str] | None = None  # (hydra key, folder): a timestamped folder, fixed for Hydra as checked

    @property
    def sweep_dir(self) -> Path:
        return Path(self.hydra["sweep"]["dir"])

    @property
    def run_dir(self) -> Path:
        return Path(self.hydra["run"]["dir"])


def preflight_argv(argv: Sequence[str], config_name: str, validate: Validator | None = None) -> int:
    """Check a command line before Hydra runs; raise ConfigError on bad input. Returns the configs checked."""
    pre = _preflight(argv, config_name, validate)
    return 0 if pre is None else pre.n_checked


def _preflight(argv: Sequence[str], config_name: str, validator: Validator | None) -> Preflight | None:
    if any(a in ("-h", "--help", "--hydra-help", "--version") for a in argv):
        return None
    try:
        args = _parse_args(argv)
    except _ArgError as err:
        raise ConfigError("command line", " ".join(argv), f"Hydra's flags and key=value overrides ({err})") from None
    if any(getattr(args, flag, None) for flag in PASS_THROUGH_FLAGS):
        return None
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    config_name = args.config_name or config_name
    gh = GlobalHydra.instance()
    backup = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            pre = _check_overrides(list(args.overrides), bool(args.multirun), config_name, validator)
            if config_name == "train":
                _check_run_dirs(pre)
            return pre
    finally:
        gh.clear()
        if backup is not None:
            gh.initialize(backup)


@dataclass
class _Sweep:
    key: str  # the key element (``generator``, ``seed``, ``+foo``)
    texts: list[str]  # ``key=value`` per value, as Hydra writes them
    values: list[Any]  # the parsed values, as Hydra applies them
    group: bool  # a config group choice (its options are composed)
    add: bool  # a ``+key`` override


def _check_overrides(raw: list[str], multirun: bool, config_name: str, validator: Validator | None) -> Preflight:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    parsed = []
    for text in raw:
        try:
            parsed.append(parser.parse_overrides([text])[0])
        except OverrideParseException as err:
            raise _malformed(text, err) from None
    multirun = multirun or any(_is_hydra(o) and o.key_or_group == "hydra.mode" and str(o.value()) == "MULTIRUN"
                               for o in parsed)
    ours = [o for o in parsed if not _is_hydra(o)]
    theirs = [o.input_line for o in parsed if _is_hydra(o)]
    if not multirun:
        for o in ours:
            if o.is_sweep_override():
                raise ConfigError(o.get_key_element(), _value_text(o),
                                  "a single value (add -m to sweep over values; [a,b] for a list)")
    else:
        _compose_like_multirun(config_name, raw)
    sweeps = {o.get_key_element(): _sweep(o, loader) for o in ours}
    full = _compose(config_name, [s.texts[0] for s in sweeps.values()] + theirs, return_hydra_config=True)
    params = OmegaConf.select(full, "hydra.sweeper.params", default=None) if multirun else None
    if params:  # sweeps an experiment config declares run too; the command line wins
        from_config = {}
        for k, v in params.items():
            text = f"{k}={v}"
            try:
                o = parser.parse_overrides([text])[0]
            except OverrideParseException as err:
                raise _malformed(text, err) from None
            if not _is_hydra(o):
                from_config[o.get_key_element()] = _sweep(o, loader)
        sweeps = {**from_config, **sweeps}
        full = _compose(config_name, [s.texts[0] for s in sweeps.values()] + theirs, return_hydra_config=True)
    hydra_view, raw_dirs = _hydra_settings(full.hydra)
    job = _without_hydra(full)
    pre = Preflight(config_name, multirun, job, hydra_view, raw_dirs)
    if multirun:
        pre.jobs = _job_list([*[f"{k}={v}" for k, v in (params or {}).items()], *(o.input_line for o in ours)],
                             parser)
    local = validate.launcher_is_local(hydra_view)
    entry = config_name if config_name in validate.ADDABLE else "train"
    validate.check_added_keys([(o.key_or_group, o.value()) for o in ours if (o.is_add() or o.is_force_add())
                               and not loader.get_group_options(o.key_or_group)], entry, job)
    if validator is not None:
        _validate_values(pre, sweeps, theirs, validator, local)
    # after the config (a bad paths.output_dir is named as such); a train run dir is checked with the folder
    validate.validate_hydra(hydra_view, multirun, run_dir_writable=config_name != "train")
    return pre


def _validate_values(pre: Preflight, sweeps: dict[str, _Sweep], theirs: list[str], validator: Validator,
                     local: bool) -> None:
    """The base config, then each other group option (composed) and each other swept value (set in place and
    checked by the validation sections that read its key) once."""
    config_name, job = pre.config_name, pre.job
    validator(job, local=local)
    base = [s.texts[0] for s in sweeps.values()]
    for i, s in enumerate(sweeps.values()):
        rest = _unique(list(zip(s.texts[1:], s.values[1:], strict=True)))
        pre.n_checked += len(rest)
        if not rest:
            continue
        if s.group or s.add or OmegaConf.select(job, s.key, default=_ABSENT) is _ABSENT:
            for text, _ in rest:  # another option of a group (or a key not in the base config): compose it
                validator(_without_hydra(_compose(config_name, [*base[:i], text, *base[i + 1:], *theirs],
                                                  return_hydra_config=True)), local=local)
            continue
        work = copy.deepcopy(job)
        changed = validate.affected_keys(work, s.key)
        plain = getattr(validator, "incremental", False)
        base_c = validate.resolved(job) if plain else None
        for _, value in rest:
            if plain and changed == {s.key} and not isinstance(value, str | dict | list):
                # nothing interpolates the key, the value is a plain number: set it in the resolved base
                validator(validate.with_values(base_c, {s.key: value}), changed=changed, local=local)
                continue
            with open_dict(work):
                OmegaConf.update(work, s.key, value, merge=False)
            if plain:  # the resolved base with this key and what interpolates it re-read: fast to validate
                validator(validate.with_values(base_c, validate.reread(work, changed)), changed=changed, local=local)
            else:
                validator(work, local=local)


_ABSENT = object()


def _sweep(o: Any, loader: Any) -> _Sweep:
    key = o.get_key_element()
    group = bool(loader.get_group_options(str(o.key_or_group)))
    add = bool(o.is_add() or o.is_force_add())
    if not o.is_sweep_override():
        return _Sweep(key, [o.input_line], [_plain(o.value())], group, add)
    texts = _values(o)
    values = [_plain(v) for v in o.sweep_iterator()]
    prefix = "+" * (2 if o.is_force_add() else 1 if o.is_add() else 0)
    return _Sweep(key, [prefix + t for t in texts], values, group, add)


def _plain(v: Any) -> Any:
    """A parsed override value as OmegaConf takes it (Hydra's quoted strings are plain strings)."""
    text = getattr(v, "text", None)
    return text if isinstance(text, str) and type(v).__name__ == "QuotedString" else v


def _unique(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    seen: set[str] = set()
    out = []
    for text, value in pairs:
        if text not in seen:
            seen.add(text)
            out.append((text, value))
    return out


def _values(override: Any) -> list[str]:
    """The override as ``key=value`` strings, one per sweep value (one for a plain override)."""
    if not override.is_sweep_override():
        return [override.input_line]
    key = override.get_key_element()
    if not override.is_discrete_sweep():
        raise ConfigError(key, _value_text(override),
                          "a list of values to sweep (a,b,c / range(...) / choice(...) / glob(...))")
    try:
        values = [f"{key}={v}" for v in override.sweep_string_iterator()]
    except Exception as err:  # range(0,3,0) and the like
        raise ConfigError(key, _value_text(override), "a sweep Hydra can expand: range(start, stop[, step]) with "
                          f"a non-zero step, choice(...), glob(...) ({' '.join(str(err).split())})") from None
    if not values:
        raise ConfigError(key, _value_text(override), "a sweep with at least one value")
    return values


def _job_list(lines: list[str], parser: Any) -> list[list[str]]:
    """The jobs of a multirun, as Hydra's basic sweeper orders them (each a list of ``key=value``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parser.parse_overrides(lines), None)[0]


def _compose_like_multirun(config_name: str, raw: list[str]) -> None:
    """Compose as Hydra first composes a multirun: the sweeps left out, every other override applied to the
    default options (so ``-m generator=flow,realnvp generator.pretrain.steps=200`` fails on the default gmm)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode

    try:
        GlobalHydra.instance().config_loader().load_configuration(config_name, raw, RunMode.MULTIRUN)
    except HydraException as err:
        e = composition_error(err, config_name, raw)
        if "Could not override" not in str(err):
            raise e from None
        raise ConfigError(e.key, e.value, f"{e.allowed} (a multirun first composes the config without its sweeps, "
                          f"with each swept group at its default: write ++{e.key}=... to set a key only the swept "
                          "options have)") from None


def _hydra_settings(node: DictConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Hydra's run / sweep directories, output subdir and launcher, resolved where they resolve outside a job,
    and the directories as written (to tell a fixed folder from a timestamped one)."""
    raw = OmegaConf.to_container(node, resolve=False)

    def get(key: str) -> Any:
        try:
            return OmegaConf.select(node, key, throw_on_missing=True)
        except Exception:
            return OmegaConf.select(raw, key) if isinstance(raw, dict) else None  # e.g. ${hydra.job.num}

    try:
        launcher = OmegaConf.to_container(node.launcher, resolve=True)
    except Exception:
        launcher = raw.get("launcher") or {}
    view = {"run": {"dir": get("run.dir")}, "sweep": {"dir": get("sweep.dir"), "subdir": raw["sweep"]["subdir"]},
            "output_subdir": get("output_subdir"), "launcher": launcher}
    return view, {"run": str(raw["run"]["dir"]), "sweep": str(raw["sweep"]["dir"])}


def _without_hydra(cfg: DictConfig) -> DictConfig:
    job = copy.copy(cfg)
    with open_dict(job):
        job.pop("hydra", None)
    return job


# ---------------------------------------------------------------------------------------------- run folders
def _check_run_dirs(pre: Preflight) -> None:
    """Refuse a run / sweep folder that another process uses or that holds another config's runs; note a finished
    run of this very config (it is reported without starting Hydra). A timestamped folder (``${now:...}``) is
    checked as resolved here and pinned for Hydra, so that two launches in the same second cannot share it."""
    from ptforget import train

    key = "hydra.sweep.dir" if pre.multirun else "hydra.run.dir"
    folder = pre.sweep_dir if pre.multirun else pre.run_dir
    validate.check_writable_dir(str(folder), key)  # before anything reads it: a name too long, a file in the way
    link = planted_link(folder, depth=3 if pre.multirun else 2)
    if link is not None:
        raise ConfigError(key, str(folder), f"a folder without symbolic links where ptforget writes ({link} is one: "
                          "files are never written through a link; remove it)")
    foreign = train.foreign_outputs(folder) if not pre.multirun and pre.hydra.get("output_subdir") else None
    if foreign is not None:
        raise ConfigError(key, str(folder), f"a folder without files ptforget did not write ({foreign}); choose "
                          "another hydra.run.dir")
    if "${now:" in pre.raw_dirs["sweep" if pre.multirun else "run"]:
        pre.pin = (key, str(folder))
    pre.lock_path = folder / train.LOCK_NAME
    holder = lock_holder(pre.lock_path)
    if holder is not None:
        raise ConfigError(key, str(folder), f"a folder no other process is using (process {holder or '?'} is "
                          "running in it)")
    if not pre.multirun:
        pre.finished = train.finished_summary(folder, pre.job)
        problem = None if pre.finished else train.run_dir_conflict(folder, pre.job)
        if problem is not None:
            raise ConfigError(key, str(folder), f"a folder without another config's run ({problem}); choose "
                              "another hydra.run.dir")
        if pre.finished is None:  # it will be written (a finished run is only reported: read-only is fine)
            validate.check_writable_dir(str(folder), key)
        return
    if pre.hydra["sweep"]["subdir"] != DEFAULT_SUBDIR or not folder.is_dir():
        return
    for i, job in enumerate(pre.jobs):
        run_dir = folder / str(i)
        recorded = _recorded_overrides(run_dir)
        foreign = train.foreign_outputs(run_dir) if recorded is None and pre.hydra.get("output_subdir") else None
        if foreign is not None:
            raise ConfigError(key, str(folder), f"a folder without files ptforget did not write ({foreign}); choose "
                              "a new hydra.sweep.dir")
        if recorded is None or recorded == job:
            continue  # nothing there yet, or this very job (it resumes or is skipped)
        problem = train.run_dir_conflict(run_dir, _without_hydra(_compose("train", job, return_hydra_config=True)))
        if problem is not None:
            raise ConfigError(key, str(folder), f"a folder whose runs belong to this sweep (job {i}, "
                              f"{' '.join(job)}, would go to {run_dir}, which holds another run: {problem}); choose "
                              "a new hydra.sweep.dir")


def _pinned(argv: list[str], key: str, folder: str) -> list[str]:
    """``argv`` with ``key`` set to ``folder`` (quoted for Hydra's grammar), replacing what set it before."""
    quoted = "'" + folder.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [a for a in argv if not a.lstrip("+").startswith(f"{key}=")] + [f"{key}={quoted}"]


def _recorded_overrides(run_dir: Path) -> list[str] | None:
    """The overrides a run in ``run_dir`` recorded (its summary's), or None when it has no summary."""
    from ptforget.io import read_json

    for name in ("summary.json", "ensemble.json"):
        path = run_dir / name
        if path.exists():
            try:
                return list(read_json(path).get("overrides") or [])
            except (OSError, ValueError, AttributeError, TypeError):
                return []
    return None


def _value_text(override: Any) -> str:
    """The value of an override as typed (``0,1`` for a sweep)."""
    return str(override.input_line).partition("=")[2]


def _malformed(text: str, err: Exception) -> ConfigError:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.startswith("See https")]
    detail = "; ".join(ln for ln in lines if not ln.startswith("Error parsing override")) or "unparsable"
    return ConfigError("override", text, f"key=value, +key=value or ~key in Hydra's override grammar ({detail})")


def _compose(config_name: str, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    from hydra import compose
    from hydra.errors import HydraException

    try:
        return compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    except HydraException as err:
        raise composition_error(err, config_name, overrides) from None


def composition_error(err: Exception, config_name: str, overrides: list[str]) -> ConfigError:
    """One ConfigError for a Hydra composition error: the group or key, the value and what is allowed."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    msg = str(err)
    loader = GlobalHydra.instance().config_loader()
    m = re.search(r"Cannot find primary config '([^']+)'", msg)
    if m:
        names = sorted(p.name.removesuffix(".yaml") for p in resources.files(CONFIG_MODULE).iterdir()
                       if p.name.endswith(".yaml"))
        return ConfigError("--config-name", m.group(1), _one_of(names))
    m = re.search(r"Could not (?:find|load) '([^']+)'", msg)
    if isinstance(err, MissingConfigException) or m:
        path = m.group(1) if m else str(getattr(err, "missing_cfg_file", "") or "?")
        group, _, option = path.rpartition("/")
        options = loader.get_group_options(group) if group else []
        return ConfigError(group or "config", option, _one_of(options) if options else "an existing config")
    cause = err.__cause__
    m = re.search(r"Could not override '([^']+)'", msg)
    if m:
        key = m.group(1)
        value = _override_value(key, overrides)
        full = str(getattr(cause, "full_key", "") or key)
        parent = full.rpartition(".")[0]
        node = getattr(cause, "parent_node", None)
        keys = [str(k) for k in node if str(k) != "hydra" and not str(k).startswith("_")] if isinstance(
            node, DictConfig) else []
        where = f"'{parent}'" if parent else "the config"
        allowed = (f"a key of {where}: " + ", ".join(repr(k) for k in keys) if keys
                   else f"an existing key ({where} has no keys)")
        return ConfigError(key, value, allowed)
    m = re.search(r"Error merging override (\S+?)=(\S*)", msg)
    if m:  # a value of the wrong type for a structured config (Hydra's launcher schemas)
        detail = " ".join(str(getattr(cause, "msg", "") or cause or msg).split("\n")[0].split())
        return ConfigError(m.group(1).lstrip("+~"), _override_value(m.group(1).lstrip("+~"), overrides),
                           f"a value of the type its schema declares ({detail})")
    m = re.search(r"Could not delete from config. '([^']+)' does not exist", msg)
    if m:
        return ConfigError("override", "~" + m.group(1), f"~key for a key that exists ('{m.group(1)}' does not)")
    m = re.search(r"Could not append to config. An item is already at '([^']+)'", msg)
    if m:
        key = m.group(1)
        return ConfigError("+" + key, _override_value(key, overrides),
                           f"a new key (the key exists: use {key}=value to change it)")
    m = re.search(r"Ambiguous value for argument '([^=']+)=([^']*)'", msg)
    if m:
        return ConfigError(m.group(1), m.group(2), "a single value (add -m to sweep over values; [a,b] for a list)")
    line = " ".join(msg.split())
    return ConfigError("overrides", " ".join(overrides), f"a composable config ({line})")


def _override_value(key: str, overrides: list[str]) -> Any:
    """The value given for ``key`` on the command line (last one wins), parsed as Hydra parses it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value: Any = None
    parser = OverridesParser.create()
    for text in overrides:
        try:
            o = parser.parse_overrides([text])[0]
        except Exception:
            continue
        if o.key_or_group == key:
            value = o.value()
    return value


def _one_of(options: Sequence[str]) -> str:
    return "one of " + ", ".join(repr(o) for o in options)


def run_checked(app: Callable[[], Any], config_name: str, validate: Validator | None) -> Any:
    """Check the command line, then hand control to the Hydra app (with the run or sweep folder locked)."""
    pre: Preflight | None = None
    logging.raiseExceptions = False  # a log file on a full disk must not print tracebacks: the cause is reported
    with interrupt.handling():
        try:
            plugins.install(sys.argv[1:])  # users' config groups and claims, checked like the built-in ones
            pre = _preflight(sys.argv[1:], config_name, validate)
            if pre is not None and pre.finished is not None:  # nothing to do, and Hydra would write .hydra/
                _print_runs(pre.job, pre.finished, pre.run_dir)
                return None  # a console script exits with what this returns: 0
            if pre is not None and pre.pin is not None:
                sys.argv[1:] = _pinned(sys.argv[1:], *pre.pin)
            with _locked(pre), _lean_sweep_validation(pre), _sweep_clock(pre), _slurm_errors(pre):
                result = app()
            if pre is not None and pre.multirun and config_name == "train":
                _sweep_done(pre)
            return result
        except ConfigError as err:
            fail(err)
        except interrupt.RunInterrupted as err:
            _cancel_slurm_jobs(pre)  # a launcher that stops leaves no job of its sweep queued or running
            _report_interrupt(err, pre)
        except Exception as err:
            fail_fatal(err)


#: the sweep's job count and start time, for the ETA on each job's line (jobs of a launcher inherit them)
SWEEP_CLOCK = "PTFORGET_SWEEP_CLOCK"


@contextmanager
def _sweep_clock(pre: Preflight | None) -> Iterator[None]:
    """Within a multirun: ``PTFORGET_SWEEP_CLOCK`` = "<jobs> <start time>" (read by ``_eta``)."""
    if pre is None or not pre.multirun or not pre.jobs:
        yield
        return
    os.environ[SWEEP_CLOCK] = f"{len(pre.jobs)} {time.time():.3f}"
    try:
        yield
    finally:
        os.environ.pop(SWEEP_CLOCK, None)


def _eta(job: int) -> str:
    """"; job 3/8, ETA 1 min 20 s" after job ``job`` of a sweep (from the mean time per job so far)."""
    try:
        total, start = os.environ[SWEEP_CLOCK].split()
        n, t0 = int(total), float(start)
    except (KeyError, ValueError):
        return ""
    done = job + 1
    left = max(n - done, 0)
    eta = (time.time() - t0) / done * left
    when = f"{eta:.0f} s" if eta < 90 else f"{eta // 60:.0f} min {eta % 60:.0f} s"
    return f"; job {done}/{n}" + (f", ETA {when}" if left else "")


@contextmanager
def _locked(pre: Preflight | None) -> Iterator[None]:
    """Hold the lock of a fixed run or sweep folder while Hydra runs (another process is refused, not raced)."""
    if pre is None or pre.lock_path is None:
        with nullcontext():
            yield
        return
    key = "hydra.sweep.dir" if pre.multirun else "hydra.run.dir"
    try:
        lock = file_lock(pre.lock_path, blocking=False)
        lock.__enter__()
    except LockBusy as err:
        raise ConfigError(key, str(pre.lock_path.parent), "a folder no other process is using (process "
                          f"{err.holder or '?'} is running in it)") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@contextmanager
def _lean_sweep_validation(pre: Preflight | None) -> Iterator[None]:
    """While a checked multirun runs, Hydra's basic sweeper composes one job per combination of swept config
    groups before the first job starts, instead of every job (0.2 s each: a 3,000-value sweep waited ten minutes).

    The preflight has checked every swept value and group option, and each job's config is composed again when
    it is launched; what only a combination can break (a key that some options of a swept group lack) is still
    composed here, once per combination.
    """
    if pre is None or not pre.multirun:
        yield
        return
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    original = BasicSweeper.validate_batch_is_legal

    def validate_batch(self: Any, batch: Sequence[Sequence[str]]) -> None:
        loader = self.hydra_context.config_loader
        keys = {o.split("=", 1)[0].lstrip("+~") for job in batch for o in job}
        groups = {k for k in keys if loader.get_group_options(k.split("@")[0])}
        # a swept group with a global package (an experiment) can change any key: then every override counts
        everything = any(g.split("@")[0] not in self.config for g in groups)
        seen: set[tuple[str, ...]] = set()
        for job in batch:
            sig = tuple(o for o in job if everything or o.split("=", 1)[0].lstrip("+~").split(".")[0] in groups)
            if sig not in seen:
                seen.add(sig)
                loader.load_sweep_config(self.config, list(job))

    BasicSweeper.validate_batch_is_legal = validate_batch
    try:
        yield
    finally:
        BasicSweeper.validate_batch_is_legal = original


@contextmanager
def _slurm_errors(pre: Preflight | None) -> Iterator[None]:
    """While a SLURM sweep runs, sbatch's refusal or a failed array job ends it in one line (``_fail_slurm``)
    instead of Hydra's traceback, with the sweep's other jobs cancelled."""
    if pre is None or not pre.multirun or "SlurmLauncher" not in str(pre.hydra["launcher"].get("_target_", "")):
        yield
        return
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

    original = BaseSubmititLauncher.launch

    def launch(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except Exception as err:
            if _is_submitit_error(err):
                _fail_slurm(err, pre)
            raise

    BaseSubmititLauncher.launch = launch
    try:
        yield
    finally:
        BaseSubmititLauncher.launch = original


def _is_submitit_error(err: BaseException) -> bool:
    return type(err).__module__.startswith("submitit") and type(err).__name__ in ("FailedJobError",
                                                                                  "UncompletedJobError")


def _slurm_sweep_jobs(pre: Preflight | None) -> list[str]:
    """The SLURM job ids of this sweep (submitit's folders ``<sweep>/.submitit/<job>_<task>``), or []."""
    if pre is None or not pre.multirun or "SlurmLauncher" not in str(pre.hydra["launcher"].get("_target_", "")):
        return []
    folder = pre.sweep_dir / ".submitit"
    return sorted({p.name.split("_")[0] for p in folder.glob("*") if p.name.split("_")[0].isdigit()}, key=int)


def _cancel_slurm_jobs(pre: Preflight | None) -> list[str]:
    """Cancel this sweep's SLURM jobs still queued or running (finished ones are untouched); their ids."""
    import subprocess

    ids = _slurm_sweep_jobs(pre)
    if ids:
        try:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            print(f"ptforget: could not cancel the sweep's SLURM jobs {' '.join(ids)}: {err}", file=sys.stderr)
    return ids


def _fail_slurm(err: BaseException, pre: Preflight | None) -> None:
    """sbatch refused the sweep, or one of its jobs failed: one line (the first of submitit's message, and where
    the job's log is), the sweep's other jobs cancelled, exit status 1. Relaunching resumes the sweep."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    first = lines[0] if lines else type(err).__name__
    log_line = next((ln for ln in lines if ".submitit" in ln and ("log" in ln or "Look at" in ln)), "")
    ids = _cancel_slurm_jobs(pre)
    msg = f"ptforget: error: SLURM: {first}"
    if first.startswith("sbatch:"):
        msg += (" (the request exceeds what the partition allows: lower hydra.launcher.cpus_per_task, mem_gb or "
                "gpus_per_node, or choose another hydra.launcher.partition)")
    if log_line and log_line != first:
        msg += f" ({log_line})"
    if ids:
        msg += f"; cancelled the sweep's other jobs ({', '.join(ids)}); the same command resumes the sweep"
    print(msg, file=sys.stderr)
    sys.exit(1)


def _report_interrupt(err: interrupt.RunInterrupted, pre: Preflight | None) -> None:
    """One line: what was interrupted and, for a sweep, which jobs have no finished result; exit 128 + signal."""
    msg = f"ptforget: {err}"
    if pre is not None and pre.multirun and pre.jobs and pre.hydra["sweep"]["subdir"] == DEFAULT_SUBDIR:
        try:
            sweep = Path(HydraConfig.get().sweep.dir)
        except Exception:
            sweep = pre.sweep_dir
        status = [_status(sweep / str(i)) for i in range(len(pre.jobs))]
        stopped = [i for i, s in enumerate(status) if s in ("interrupted", "failed")]
        not_run = [i for i, s in enumerate(status) if s is None]
        n = len(pre.jobs)
        msg += (f"; sweep {sweep}: {n - len(stopped) - len(not_run)} of {n} jobs finished, interrupted: "
                f"{_ranges(stopped) or 'none'}, did not run: {_ranges(not_run) or 'none'}")
    print(msg, file=sys.stderr)
    sys.exit(err.exit_code)


def _status(run_dir: Path) -> str | None:
    from ptforget.io import read_json

    for name in ("summary.json", "ensemble.json"):
        try:
            return str(read_json(run_dir / name).get("status"))
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _ranges(nums: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> 'jobs 0-2, 5, 7-8'."""
    if not nums:
        return ""
    parts, start, prev = [], nums[0], nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ("job " if len(nums) == 1 else "jobs ") + ", ".join(parts)


def _density_figures(summary: dict[str, Any], run_dir: Path) -> None:
    """``density.png`` in the run folder from its density snapshots (with seeds > 1: the first seed's)."""
    from ptforget.train import density_figure

    members = summary.get("members")
    if members:
        density_figure(run_dir / f"seed{members[0]['seed']}", out=run_dir / "density.png")
    else:
        density_figure(run_dir)


def _sweep_done(pre: Preflight) -> None:
    """The closing line of a finished sweep: how many jobs, where, and the command that tables them."""
    if pre.job.get("quiet"):
        return
    from ptforget.terminal import line

    try:
        sweep = Path(HydraConfig.get().sweep.dir)
    except Exception:
        sweep = pre.sweep_dir
    line(f"sweep done: {len(pre.jobs) or '?'} jobs in {sweep}; tables and figures: ptforget-report {sweep}")


def _print_runs(cfg: DictConfig, summary: dict[str, Any], run_dir: Path) -> None:
    from ptforget.summary import print_summary

    if cfg.get("quiet"):
        return
    members = summary.get("members")  # seeds > 1: one summary per member under run_dir/seed<k>/
    for s, d in [(m, run_dir / f"seed{m['seed']}") for m in members] if members else [(summary, run_dir)]:
        print_summary(s, d)


# ---------------------------------------------------------------------------------------------- Hydra apps
@hydra.main(version_base="1.3", config_path="pkg://ptforget.conf", config_name="train")
@guarded
def train_app(cfg: DictConfig) -> float | None:
    """ptforget-train: one post-training run (or a sweep with -m); prints its forgetting summary."""
    from ptforget.train import run_training

    validate.preflight(cfg)  # where the job runs: its devices must exist here
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    summary = run_training(cfg, run_dir)
    _density_figures(summary, run_dir)
    if str(hc.mode) == "RunMode.MULTIRUN":  # one line per job; the sweep's last line points to ptforget-report
        if not cfg.get("quiet"):
            from ptforget.summary import job_line
            from ptforget.terminal import line

            line(job_line(summary, run_dir, hc.job.num, list(hc.overrides.task)) + _eta(int(hc.job.num)))
    else:
        _print_runs(cfg, summary, run_dir)
    if cfg.get("optimized_metric") == "theory_gap":
        return _theory_gap(cfg, summary, run_dir)
    members = summary.get("members")
    return (members[0] if members else summary).get("final", {}).get("old_mass")


def _theory_gap(cfg: DictConfig, summary: dict[str, Any], run_dir: Path) -> float:
    """``optimized_metric=theory_gap``: |measured - predicted| final old mass, written to theory_gap.json."""
    from ptforget.io import write_json
    from ptforget.predict import theory_gap

    config = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    gap = theory_gap(config, summary)
    write_json(run_dir / "theory_gap.json", gap)
    return float(gap["theory_gap"])


@hydra.main(version_base="1.3", config_path="pkg://ptforget.conf", config_name="theory")
@guarded
def theory_app(cfg: DictConfig) -> None:
    """ptforget-theory: print the predictions of every claim for a config as a table and write them, with the
    resolved config they were computed for, as JSON into the run's own folder (or ``output``)."""
    from ptforget.bridge import theory_config, theory_fields
    from ptforget.check import predictions, selected_claims
    from ptforget.io import write_json
    from ptforget.terminal import width
    from ptforget.theory import format_predictions, predictions_to_json

    tc = theory_config(cfg, whitened=True)
    from ptforget.predict import applicable_claims

    ids = applicable_claims(cfg) or [c.id for c in selected_claims(cfg)]
    try:
        preds = predictions(tc, ids)
    except FloatingPointError as err:  # a flow left its bounded region: the step is too large for it
        key = theory_fields(cfg)[1].get("lr", "theory.lr")
        raise ConfigError(key, tc.lr, f"a smaller step ({err})") from None
    out = theory_output(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    write_json(out, predictions_to_json(preds, tc, config={k: v for k, v in config.items() if k != "hydra"}))
    _theory_config_block(cfg)
    print(format_predictions(preds, tc, width=width()))
    print(f"\nwritten: {out}")
    _theory_sweep_table(cfg, preds)


def _theory_config_block(cfg: DictConfig) -> None:
    """The lines that say which objective, optimizer and steps the predictions are for (``ptforget.predict``)."""
    import textwrap

    from ptforget.predict import config_lines
    from ptforget.terminal import width

    for ln in config_lines(cfg):
        print("\n".join(textwrap.wrap(ln, width() or 10**6, subsequent_indent="  ") or [""]))
    print()


def _theory_sweep_table(cfg: DictConfig, preds: list[Any]) -> None:
    """In a multirun: this job's row beside its predictions, and the sweep's combined table rewritten."""
    hc = HydraConfig.get()
    if str(hc.mode) != "RunMode.MULTIRUN":
        return
    from ptforget.io import write_json
    from ptforget.predict import combined_row, write_combined

    run_dir = Path(hc.runtime.output_dir)
    write_json(run_dir / "theory_row.json", combined_row(cfg, preds, list(hc.overrides.task)))
    print(f"combined table: {write_combined(Path(hc.sweep.dir))}")


def theory_output(cfg: DictConfig) -> Path:
    """Where the predictions go: ``output`` when given, else ``predictions.json`` in the run folder; a file
    already there from another run is never overwritten (``predictions-2.json``, ...)."""
    if cfg.get("output") is not None:
        return Path(str(cfg.output))
    folder = Path(HydraConfig.get().runtime.output_dir)
    out, k = folder / "predictions.json", 1
    while out.exists():
        k += 1
        out = folder / f"predictions-{k}.json"
    return out


@hydra.main(version_base="1.3", config_path="pkg://ptforget.conf", config_name="check")
@guarded
def check_app(cfg: DictConfig) -> None:
    """ptforget-check: plan, train, judge every claim; print the verdict table, write report.md and figures."""
    from hydra import compose

    from ptforget.build import quiet_lightning
    from ptforget.check import print_table, run_check

    quiet_lightning()
    # W&B's console lines (report_to=wandb) stay in its own log under the output folder
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("dry_run", False):  # the plan and its estimated times; nothing trains
        from ptforget.check.engine import make_executor, selected_claims, validate_check_config
        from ptforget.check.plan import plan_dry_run

        validate_check_config(cfg)
        plan_dry_run(cfg, out, lambda overrides: compose(config_name="train", overrides=list(overrides)),
                     selected_claims(cfg), getattr(make_executor(cfg), "workers", 1))
        return
    payload = run_check(cfg, out, lambda overrides: compose(config_name="train", overrides=list(overrides)))
    print_table(payload)
    figures = out / "figures"
    if payload.get("merged"):
        print(payload["merged"])
    print(f"report: {out / 'report.md'}")
    print(f"verdicts: {out / 'verdicts.json'}" + (f"\nfigures: {figures}" if figures.is_dir() else ""))
    if payload["errors"]:
        for e in payload["errors"]:
            print(f"ptforget-check: error: {e}", file=sys.stderr)
        sys.exit(1)
    if cfg.strict and (payload["counts"]["theory"]["supports rival"] or payload["counts"]["consistency"]["fails"]):
        sys.exit(1)


def verdicts_main(argv: Sequence[str] | None = None) -> int:
    """ptforget-verdicts: the README's verdict block, generated from a check's verdicts.json (never pasted).

    ``ptforget-verdicts VERDICTS.json`` prints the block; ``--readme README.md`` writes it between the README's
    markers; ``--check`` exits 1 when the README's block differs from the generated one.
    """
    from ptforget.check.render import ReadmeError, payload_problem, readme_block, readme_current, update_readme
    from ptforget.io import read_json

    ap = argparse.ArgumentParser(prog="ptforget-verdicts", description=verdicts_main.__doc__)
    ap.add_argument("verdicts", type=Path, help="a check's verdicts.json")
    ap.add_argument("--readme", type=Path, default=None, help="README to update (or to compare with --check)")
    ap.add_argument("--check", action="store_true", help="compare the README's block with the generated one")
    ap.add_argument("--figure-prefix", default="", help="prefix of figure paths in the block (e.g. docs/check/)")
    args = ap.parse_args(argv)
    problem = payload_problem(args.verdicts)
    if problem is not None:
        print(f"ptforget-verdicts: error: {args.verdicts} is not a check's verdicts.json ({problem})",
              file=sys.stderr)
        return 2
    payload = read_json(args.verdicts)
    block = readme_block(payload, args.figure_prefix)
    errors = [str(e) for e in payload.get("errors") or []]
    for e in errors:  # the block names them too: a check that could not judge everything never reads as clean
        print(f"ptforget-verdicts: error: the check could not judge: {e}", file=sys.stderr)
    if args.readme is None:
        print(block)
        return 1 if errors else 0
    try:
        if args.check:
            same = readme_current(args.readme) == block
            print("README verdict block is current" if same else
                  "README verdict block differs from the generated one")
            return 0 if same and not errors else 1
        changed = update_readme(args.readme, block)
    except ReadmeError as err:
        print(f"ptforget-verdicts: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.readme}: {'updated' if changed else 'unchanged'}")
    return 1 if errors else 0


def _app_help(primary: str) -> bool:
    """``-h`` / ``--help``: this app's groups and keys with their documentation (``ptforget.helptext``)."""
    argv = sys.argv[1:]
    if not any(a in ("-h", "--help") for a in argv):
        return False
    from ptforget.helptext import print_help

    try:
        plugins.install(argv)
    except ConfigError as err:
        fail(err)
    print_help(primary, argv)
    return True


def train_main() -> Any:
    """Entry point of ptforget-train."""
    if _app_help("train"):
        return None
    return run_checked(train_app, "train", validate.preflight)


def theory_main() -> Any:
    """Entry point of ptforget-theory."""
    if _app_help("theory"):
        return None
    return run_checked(theory_app, "theory", validate.validate_theory)


def check_main() -> Any:
    """Entry point of ptforget-check."""
    if _app_help("check"):
        return None
    return run_checked(check_app, "check", validate.validate_check)


if __name__ == "__main__":  # python -m ptforget.cli runs the training entry point
    train_main()
