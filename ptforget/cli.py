"""Console entry points. Bad input prints one line naming the key and what is allowed, and exits with 2.

Every entry point checks its command line before Hydra starts (Hydra creates the run directory before the task
function runs, and prints multi-line errors): the overrides are parsed and composed with Hydra's compose API,
Hydra's errors are turned into one ``ptforget: error: invalid config: key=value; allowed: ...`` line, and the
composed config is validated (``ptforget.validate.preflight`` for training). A multirun checks every sweep value
(each value in turn, the other sweeps at their first value: linear in the number of values, not the product).
Hydra's own flags (``--help``, ``--cfg``, ``--info``, ...) and ``hydra/...`` / ``hydra.`` overrides pass through
unchecked.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ptforget import validate
from ptforget.errors import ConfigError

CONFIG_MODULE = "ptforget.conf"
#: flags after which Hydra prints something and runs nothing (or loads configs from elsewhere): not checked
PASS_THROUGH_FLAGS = ("help", "hydra_help", "version", "cfg", "info", "shell_completion", "experimental_rerun",
                      "config_path", "config_dir")
Validator = Callable[[DictConfig], None]


def guarded(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a ConfigError into one clear stderr line and exit status 2."""

    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except ConfigError as err:
            fail(err)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def fail(err: ConfigError) -> None:
    """Print the error as one line on stderr and exit with status 2."""
    print("ptforget: error: " + " ".join(str(err).split()), file=sys.stderr)
    sys.exit(2)


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


def preflight_argv(argv: Sequence[str], config_name: str, validate: Validator | None = None) -> int:
    """Check a command line before Hydra runs; raise ConfigError on bad input. Returns the configs checked."""
    if any(a in ("-h", "--help", "--hydra-help", "--version") for a in argv):
        return 0
    try:
        args = _parse_args(argv)
    except _ArgError as err:
        raise ConfigError("command line", " ".join(argv), f"Hydra's flags and key=value overrides ({err})") from None
    if any(getattr(args, flag, None) for flag in PASS_THROUGH_FLAGS):
        return 0
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    config_name = args.config_name or config_name
    gh = GlobalHydra.instance()
    backup = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return _check_overrides(list(args.overrides), bool(args.multirun), config_name, validate)
    finally:
        gh.clear()
        if backup is not None:
            gh.initialize(backup)


def _check_overrides(raw: list[str], multirun: bool, config_name: str, validate: Validator | None) -> int:
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
    if not multirun:
        for o in ours:
            if o.is_sweep_override():
                raise ConfigError(o.get_key_element(), _value_text(o),
                                  "a single value (add -m to sweep over values; [a,b] for a list)")
        variants = [[o.input_line for o in ours]]
    else:
        variants = _sweep_variants(ours, parser, config_name)
    configs = [_compose(config_name, overrides) for overrides in variants]  # Hydra-level errors first (cheap)
    if validate is not None:
        for cfg in configs:
            validate(cfg)
    return len(configs)


def _values(override: Any) -> list[str]:
    """The override as ``key=value`` strings, one per sweep value (one for a plain override)."""
    if not override.is_sweep_override():
        return [override.input_line]
    key = override.get_key_element()
    if not override.is_discrete_sweep():
        raise ConfigError(key, _value_text(override),
                          "a list of values to sweep (a,b,c / range(...) / choice(...) / glob(...))")
    values = [f"{key}={v}" for v in override.sweep_string_iterator()]
    if not values:
        raise ConfigError(key, _value_text(override), "a sweep with at least one value")
    return values


def _sweep_variants(ours: list[Any], parser: Any, config_name: str) -> list[list[str]]:
    """Override lists to check for a multirun: all sweeps at their first value, then each other value in turn."""
    from hydra.errors import OverrideParseException

    sweeps: dict[str, list[str]] = {}
    for o in ours:
        sweeps[o.get_key_element()] = _values(o)
    base = {k: v[0] for k, v in sweeps.items()}
    # sweeps an experiment config declares (hydra.sweeper.params) run too; the command line wins
    cfg = _compose(config_name, list(base.values()), return_hydra_config=True)
    sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None)
    params = sweeper.get("params") if sweeper is not None and "BasicSweeper" in str(sweeper.get("_target_")) else None
    if params:
        from_config: dict[str, list[str]] = {}
        for k, v in params.items():
            text = f"{k}={v}"
            try:
                o = parser.parse_overrides([text])[0]
            except OverrideParseException as err:
                raise _malformed(text, err) from None
            if not _is_hydra(o):
                from_config[o.get_key_element()] = _values(o)
        sweeps = {**from_config, **sweeps}
        base = {k: v[0] for k, v in sweeps.items()}
    variants = [list(base.values())]
    for key, values in sweeps.items():
        for v in values[1:]:
            variants.append([v if k == key else b for k, b in base.items()])
    return variants


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
    """Check the command line, then hand control to the Hydra app."""
    try:
        preflight_argv(sys.argv[1:], config_name, validate)
    except ConfigError as err:
        fail(err)
    return app()


# ---------------------------------------------------------------------------------------------- Hydra apps
@hydra.main(version_base="1.3", config_path="pkg://ptforget.conf", config_name="train")
@guarded
def train_app(cfg: DictConfig) -> float | None:
    """ptforget-train: one post-training run (or a sweep with -m); prints its forgetting summary."""
    from ptforget.summary import print_summary
    from ptforget.train import run_training

    validate.preflight(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run_training(cfg, run_dir)
    members = summary.get("members")  # seeds > 1: one summary per member under run_dir/seed<k>/
    runs = [(m, run_dir / f"seed{m['seed']}") for m in members] if members else [(summary, run_dir)]
    if not cfg.quiet:
        for s, d in runs:
            print_summary(s, d)
    return runs[0][0].get("final", {}).get("old_mass")


@hydra.main(version_base="1.3", config_path="pkg://ptforget.conf", config_name="theory")
@guarded
def theory_app(cfg: DictConfig) -> None:
    """ptforget-theory: print the predictions of every claim for a config as a table and write them as JSON."""
    from ptforget.bridge import theory_config
    from ptforget.check import predictions
    from ptforget.io import write_json
    from ptforget.theory import format_predictions, predictions_to_json

    preds = predictions(theory_config(cfg))
    print(format_predictions(preds))
    write_json(cfg.output, predictions_to_json(preds))
    print(f"\nwritten: {cfg.output}")


@hydra.main(version_base="1.3", config_path="pkg://ptforget.conf", config_name="check")
@guarded
def check_app(cfg: DictConfig) -> None:
    """ptforget-check: plan, train, judge every claim; print the verdict table, write report.md and figures."""
    from hydra import compose

    from ptforget.build import quiet_lightning
    from ptforget.check import print_table, run_check

    quiet_lightning()
    out = Path(HydraConfig.get().runtime.output_dir)
    payload = run_check(cfg, out, lambda overrides: compose(config_name="train", overrides=list(overrides)))
    print_table(payload)
    figures = out / "figures"
    print(f"report: {out / 'report.md'}")
    print(f"verdicts: {out / 'verdicts.json'}" + (f"\nfigures: {figures}" if figures.is_dir() else ""))
    if payload["errors"]:
        for e in payload["errors"]:
            print(f"ptforget-check: error: {e}", file=sys.stderr)
        sys.exit(1)
    if cfg.strict and payload["counts"]["theory"]["fails"]:
        sys.exit(1)


def verdicts_main(argv: Sequence[str] | None = None) -> int:
    """ptforget-verdicts: the README's verdict block, generated from a check's verdicts.json (never pasted).

    ``ptforget-verdicts VERDICTS.json`` prints the block; ``--readme README.md`` writes it between the README's
    markers; ``--check`` exits 1 when the README's block differs from the generated one.
    """
    from ptforget.check.render import load_payload, readme_block, readme_current, update_readme

    ap = argparse.ArgumentParser(prog="ptforget-verdicts", description=verdicts_main.__doc__)
    ap.add_argument("verdicts", type=Path, help="a check's verdicts.json")
    ap.add_argument("--readme", type=Path, default=None, help="README to update (or to compare with --check)")
    ap.add_argument("--check", action="store_true", help="compare the README's block with the generated one")
    ap.add_argument("--figure-prefix", default="", help="prefix of figure paths in the block (e.g. docs/check/)")
    args = ap.parse_args(argv)
    payload = load_payload(args.verdicts)
    if payload is None:
        print(f"ptforget-verdicts: error: {args.verdicts} is not a check's verdicts.json", file=sys.stderr)
        return 2
    block = readme_block(payload, args.figure_prefix)
    if args.readme is None:
        print(block)
        return 0
    if args.check:
        same = readme_current(args.readme) == block
        print("README verdict block is current" if same else "README verdict block differs from the generated one")
        return 0 if same else 1
    changed = update_readme(args.readme, block)
    print(f"{args.readme}: {'updated' if changed else 'unchanged'}")
    return 0


def train_main() -> Any:
    """Entry point of ptforget-train."""
    return run_checked(train_app, "train", validate.preflight)


def theory_main() -> Any:
    """Entry point of ptforget-theory."""
    return run_checked(theory_app, "theory", validate.validate_theory)


def check_main() -> Any:
    """Entry point of ptforget-check."""
    return run_checked(check_app, "check", validate.validate_check)


if __name__ == "__main__":  # python -m ptforget.cli runs the training entry point
    train_main()
