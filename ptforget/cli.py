"""Hydra entry points. Bad input prints one line naming the key and what is allowed, and exits with 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ptforget.errors import ConfigError


def guarded(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a ConfigError into one clear stderr line and exit status 2."""

    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except ConfigError as err:
            print(f"ptforget: error: {err}", file=sys.stderr)
            sys.exit(2)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@guarded
def train_main(cfg: DictConfig) -> float | None:
    """ptforget-train: one post-training run (or a sweep with -m); prints its forgetting summary."""
    from ptforget.summary import print_summary
    from ptforget.train import run_training

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run_training(cfg, run_dir)
    if not cfg.quiet:
        print_summary(summary, run_dir)
    return summary["final"].get("old_mass")



@hydra.main(version_base="1.3", config_path="conf", config_name="theory")
@guarded
def theory_main(cfg: DictConfig) -> None:
    """ptforget-theory: print the predictions of every claim for a config as a table and write them as JSON."""
    from ptforget.bridge import theory_config
    from ptforget.io import write_json
    from ptforget.theory.claims import all_predictions, format_predictions, predictions_to_json

    preds = all_predictions(theory_config(cfg))
    print(format_predictions(preds))
    write_json(cfg.output, predictions_to_json(preds))
    print(f"\nwritten: {cfg.output}")


@hydra.main(version_base="1.3", config_path="conf", config_name="check")
@guarded
def check_main(cfg: DictConfig) -> None:
    """ptforget-check: run every claim's experiments, print the verdict table, write report.md and figures."""
    from hydra import compose

    from ptforget.check import print_verdicts, run_check
    from ptforget.train import quiet_lightning

    quiet_lightning()
    out = Path(HydraConfig.get().runtime.output_dir)
    payload = run_check(cfg, out, lambda overrides: compose(config_name="train", overrides=list(overrides)))
    print_verdicts(payload)
    print(f"report: {out / 'report.md'}  verdicts: {out / 'verdicts.json'}  figures: {out / 'figures'}")
    if cfg.strict and payload["counts"]["fails"]:
        sys.exit(1)


if __name__ == "__main__":  # python -m ptforget.cli runs the training entry point
    train_main()
