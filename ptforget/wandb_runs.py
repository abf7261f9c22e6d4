"""W&B runs for dashboards: one W&B run per seed, written when the training run ends.

A W&B run is written from what the run recorded (its ``trajectory.csv``, ``summary.json`` and ``density.png``), so
batched seeds (one process training S seeds in one vmapped step), sequential seeds and resumed runs all give the
same thing: one run per seed, with every evaluation from step 0, in a W&B *group* that names the study and the
config without its seed, so that a dashboard grouped by run group draws the seed band. Each run has

* ``job_type`` ``train``, a readable ``name`` (the chosen options and the swept settings, and the seed), ``tags``
  (the config's ``tags`` and the generator and objective options);
* the whole resolved config plus ``choices`` (the config-group options it was composed from: ``generator: gmm``)
  and ``task_name``;
* the history ``eval/<metric>`` and ``train/loss`` at every evaluated step, ``density`` (the density figure) and
  the summary's final values, extremes and forgetting in the run summary.

The W&B mode is the top-level ``wandb_mode`` key (the same key as ``ptforget-check``'s); a non-empty
``WANDB_MODE`` environment variable wins (the tests set ``disabled``). Offline runs land in ``<seed folder>/wandb/``;
W&B's caches go to the project cache (``paths.cache_dir``/wandb), never into a run folder.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ptforget")

#: overrides that never name a run (folders, loggers, seeds)
UNNAMED = ("hydra.", "seed=", "seeds=", "logger", "wandb_mode", "paths.", "quiet", "study=", "tags=", "task_name=")
#: the options shown first in a run's name, in this order
NAMED_GROUPS = ("generator", "objective", "optimizer", "experiment")


def mode_of(cfg: DictConfig | dict) -> str:
    """The W&B mode a run logs with: a non-empty WANDB_MODE, else ``logger.mode`` (= ``wandb_mode``)."""
    env = os.environ.get("WANDB_MODE", "").strip()
    if env:
        return env
    logger = cfg["logger"] if isinstance(cfg, dict) else cfg.logger
    return str(logger.get("mode") or "offline")


def group_of(container: dict[str, Any]) -> str:
    """``<study>-<hash of the config without its seed>``: the seeds of one config share it (their seed band)."""
    from ptforget.train import config_hash

    study = container.get("study", "default")
    given = (container.get("logger") or {}).get("group")
    base = config_hash({k: v for k, v in container.items() if k not in ("seed", "seeds")})
    return f"{given if given and given != study else study}-{base}"


def name_of(choices: dict[str, Any], overrides: list[str], seed: int) -> str:
    """A readable run name: the chosen options, then the other settings the command line set, then the seed."""
    parts = [str(choices[g]) for g in NAMED_GROUPS if choices.get(g)]
    groups = {f"{g}=" for g in choices}
    parts += [o for o in overrides if not o.startswith(UNNAMED) and not any(o.startswith(g) for g in groups)]
    return " ".join([*parts, f"seed{seed}"])


def tags_of(container: dict[str, Any], choices: dict[str, Any]) -> list[str]:
    """The config's ``tags`` and its generator and objective options (deduplicated, in order)."""
    tags = [str(t) for t in (container.get("tags") or [])]
    tags += [str(choices[g]) for g in ("generator", "objective") if choices.get(g)]
    return list(dict.fromkeys(tags))


def _flat(prefix: str, node: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flat(f"{prefix}/{k}" if prefix else str(k), v))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        out[prefix] = float(node)
    return out


def _members(run_dir: Path, summary: dict[str, Any]) -> list[tuple[dict[str, Any], Path]]:
    members = summary.get("members")
    if members:
        return [(m, run_dir / f"seed{m['seed']}") for m in members]
    return [(summary, run_dir)]


def log_runs(cfg: DictConfig, run_dir: Path, summary: dict[str, Any]) -> list[Path]:
    """Write one W&B run per seed of a finished (complete, diverged or failed) run; returns their run folders.

    Never raises for W&B itself: a W&B failure is one warning line (the run's own files are already written).
    """
    if cfg.logger.get("kind") != "wandb":
        return []
    mode = mode_of(cfg)
    if mode == "disabled":
        return []
    cache = Path(str(cfg.paths.get("cache_dir") or ".cache/ptforget")) / "wandb"
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR", "WANDB_CONFIG_DIR"):
        os.environ.setdefault(var, str(cache / var.removeprefix("WANDB_").lower()))
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb
    except ImportError:
        log.warning("logger=wandb but wandb is not installed: no W&B runs for %s", run_dir)
        return []
    if mode == "online":
        from ptforget import build

        if not build.wandb_reachable():
            log.warning("W&B server unreachable within %.0f s: logging offline to %s (sync later with "
                        "scripts/wandb_sync.sh)", build.WANDB_PROBE_S, run_dir)
            mode = "offline"
    container = OmegaConf.to_container(cfg, resolve=True)
    container = {k: v for k, v in container.items() if k != "hydra"}
    written = []
    for member, folder in _members(run_dir, summary):
        try:
            written.append(_log_member(wandb, mode, container, member, folder))
        except Exception as err:  # W&B must never lose or fail a finished run
            log.warning("could not write the W&B run of %s (%s: %s)", folder, type(err).__name__, err)
    return written


def _log_member(wandb: Any, mode: str, container: dict[str, Any], member: dict[str, Any], folder: Path) -> Path:
    from ptforget.io import read_trajectory
    from ptforget.train import density_figure

    choices = dict(member.get("choices") or {})
    overrides = list(member.get("overrides") or [])
    seed = int(member.get("seed", container.get("seed", 0)))
    config = {**container, "seed": seed, "choices": choices}
    logger = container.get("logger") or {}
    init = dict(project=logger.get("project", "ptforget"), entity=logger.get("entity"), group=group_of(container),
                job_type=str(container.get("task_name") or "train"), name=name_of(choices, overrides, seed),
                tags=tags_of(container, choices), config=config, dir=str(folder), reinit="create_new",
                settings=wandb.Settings(init_timeout=60, console="off"))
    try:
        run = wandb.init(mode=mode, **init)
    except Exception as err:  # the server went away between the probe and the handshake
        if mode != "online":
            raise
        log.warning("W&B online start failed (%s): logging offline to %s", type(err).__name__, folder)
        run = wandb.init(mode="offline", **init)
    try:
        path = folder / "trajectory.csv"
        cols = read_trajectory(path) if path.is_file() else {}
        steps = cols.pop("step", [])
        for i, step in enumerate(steps):
            row = {("train/loss" if k == "loss" else f"eval/{k}"): float(v[i]) for k, v in cols.items()
                   if math.isfinite(float(v[i]))}
            run.log(row, step=int(step))
        png = folder / "density.png"
        if not png.is_file():
            density_figure(folder)
        if png.is_file():
            run.log({"density": wandb.Image(str(png))}, step=int(steps[-1]) if len(steps) else 0)
        run.summary.update({"status": member.get("status"), "steps": member.get("steps"),
                            **_flat("final", member.get("final")), **_flat("extremes", member.get("extremes")),
                            **_flat("forgetting", member.get("forgetting")), **_flat("target", member.get("target"))})
        directory = Path(run.dir).parent
    finally:
        run.finish()
    return directory
