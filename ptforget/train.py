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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ptforget import build, interrupt
from ptforget.errors import ConfigError
from ptforget.io import (
    LockBusy,
    environment_error,
    file_lock,
    lock_holder,
    planted_link,
    read_json,
    write_csv,
    write_json,
)

log = logging.getLogger("ptforget")

#: config keys that do not change a run's result (excluded from its hash)
NON_RESULT_KEYS = ("paths", "logger", "hydra", "quiet", "study", "checkpoint_every", "limits", "wandb_mode", "tags",
                   "task_name", "optimized_metric")
#: keys inside a group that do not change a run's result either (where the pretrained weights are cached, a bar)
NON_RESULT_LEAVES = {"trainer": ("enable_progress_bar",), "generator": ("cache_dir",)}
#: statuses of a run that has ended for good (its folder is reused only by the same config)
FINISHED = ("complete", "diverged")
#: the lock file that keeps two processes out of one run folder
LOCK_NAME = ".ptforget.lock"
#: what a resume checkpoint must hold (a file without them is foreign and is moved aside)
CHECKPOINT_KEYS = ("step", "weights", "optimizer", "objective", "histories", "diverged", "bad_step",
                   "params_bad_step", "rng", "config_hash")


class RunDirError(ConfigError):
    """A run folder that this run must not use: another config's run is in it, or another process is."""


class _ResumeFailed(Exception):
    """The checkpoint passed its checks but could not be restored (it has been moved aside)."""


def config_hash(cfg: DictConfig | dict, **replace: Any) -> str:
    """Stable hash of everything that determines a run's result (seed included); ``replace`` overrides top-level
    keys (a member's seed) without building a new config."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c = {k: v for k, v in {**c, **replace}.items() if k not in NON_RESULT_KEYS}
    for group, keys in NON_RESULT_LEAVES.items():
        if isinstance(c.get(group), dict):
            c[group] = {k: v for k, v in c[group].items() if k not in keys}
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

    A folder holding a run of another config is never overwritten (RunDirError), nor one that another process
    is using (a lock). SIGTERM / SIGINT stop the run at a step boundary, save ``last.ckpt`` and raise
    ``interrupt.RunInterrupted``. A foreign or incompatible ``last.ckpt`` is moved aside and the run restarts.
    """
    from ptforget.validate import validate_optimizer, validate_top

    run_dir = Path(run_dir)
    validate_top(cfg)
    finished = finished_summary(run_dir, cfg) if reuse else None
    if finished is not None:  # read only: a finished run in a read-only folder is still returned
        log.info("skipping %s: already %s", run_dir, finished.get("status"))
        return finished
    from ptforget.progress import enabled
    from ptforget.terminal import progress_wanted

    bar = cfg.trainer.get("enable_progress_bar")
    with interrupt.handling(), enabled(progress_wanted(bool(cfg.get("quiet"))) if bar is None else bool(bar)):
        _refuse_foreign(run_dir, cfg)  # before anything is built or written
        build.quiet_lightning()
        torch.set_num_threads(int(cfg.threads))
        task, generator, objective = _build(cfg)
        if int(cfg.get("seeds", 1)) > 1 and not objective.batchable:
            return _sequential_seeds(cfg, run_dir, reuse)
        validate_optimizer(build.optimizer_config(cfg))  # what the module checks, before the folder is touched
        objective.validate(generator, task)
        with claim_run_dir(run_dir):
            finished = finished_summary(run_dir, cfg) if reuse else None
            if finished is not None:  # another process finished it meanwhile
                return finished
            _refuse_foreign(run_dir, cfg)
            try:
                return _fit(cfg, run_dir, task, generator, objective, reuse)
            except _ResumeFailed:  # the checkpoint is aside now: build everything afresh and start from step 0
                task, generator, objective = _build(cfg)
                return _fit(cfg, run_dir, task, generator, objective, reuse=False)


def _build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    seed_everything(int(cfg.seed))
    objects = build.build(cfg)
    seed_everything(int(cfg.seed))  # pretraining used its own seed; post-training starts from this one
    return objects


def _refuse_foreign(run_dir: Path, cfg: DictConfig) -> None:
    """RunDirError when another process uses ``run_dir`` or it holds another config's run (reads only)."""
    holder = lock_holder(run_dir / LOCK_NAME)
    if holder is not None:
        raise RunDirError("run_dir", str(run_dir), f"a folder no other process is using (process {holder or '?'} "
                          "is running in it)")
    link = planted_link(run_dir)
    if link is not None:
        raise RunDirError("run_dir", str(run_dir), f"a folder without symbolic links where ptforget writes ({link} "
                          "is one: files are never written through a link; remove it)")
    problem = run_dir_conflict(run_dir, cfg)
    if problem is not None:
        raise RunDirError("run_dir", str(run_dir), f"a folder without another config's run ({problem})")


@contextmanager
def claim_run_dir(run_dir: Path) -> Iterator[None]:
    """Keep other processes out of ``run_dir`` for the block (RunDirError when one is already in it)."""
    try:
        with file_lock(run_dir / LOCK_NAME, blocking=False):
            yield
    except LockBusy as err:
        raise RunDirError("run_dir", str(run_dir), "a folder no other process is using (process "
                          f"{err.holder or '?'} is running in it)") from None


def run_dir_conflict(run_dir: Path, cfg: DictConfig) -> str | None:
    """What in ``run_dir`` belongs to a run of another config (a summary with another hash), or None.

    Looks at the run's summary (summary.json; ensemble.json with seeds > 1, and then every member's folder). An
    unreadable summary counts as foreign: it is never overwritten blindly.
    """
    seeds = int(cfg.get("seeds", 1))
    run_hash = config_hash(cfg)
    own = "ensemble.json" if seeds > 1 else "summary.json"
    expected: dict[Path, tuple[str, ...]] = {run_dir / own: (run_hash,),
                                             run_dir / ("summary.json" if seeds > 1 else "ensemble.json"): ()}
    if seeds > 1:
        container = OmegaConf.to_container(cfg, resolve=True)
        for k in range(seeds):  # a member is a batched member or, for sequential seeds, a solo run of seed + k
            expected[run_dir / f"seed{int(cfg.seed) + k}" / "summary.json"] = (
                member_hash(container, k), config_hash(member_config(cfg, k)))
    for path, allowed in expected.items():
        if not path.exists():
            continue
        try:
            s = read_json(path)
            got, status = s["config_hash"], s.get("status")
        except (OSError, ValueError, TypeError, KeyError):
            return f"{path} is unreadable"
        if got not in allowed:
            return f"{path} holds a {status} run of config {got}, not {run_hash}"
    return None


#: files a run writes into its folder, which only a run of ptforget (its .hydra/ or summary beside them) explains
RUN_OUTPUTS = ("trajectory.csv", "density.npz", "density.png", "lightning/metrics.csv")


def foreign_outputs(run_dir: Path) -> str | None:
    """A file in ``run_dir`` under a name a run writes that no run of ptforget wrote (no summary, checkpoint or
    ``.hydra/`` record beside it): the tool would write over it, so the folder is refused. None when there is none."""
    if any((run_dir / n).exists() for n in ("summary.json", "ensemble.json", "last.ckpt", ".hydra/config.yaml")):
        return None  # a run of ptforget was here: run_dir_conflict and the checkpoint's hash decide
    for name in RUN_OUTPUTS:
        if (run_dir / name).exists():
            return f"{run_dir / name} is not from a ptforget run: no summary.json or .hydra/ beside it"
    return None


def member_hash(container: dict[str, Any], k: int) -> str:
    """The hash of member k of a batched ensemble: it names its seed and its ensemble (first seed, size), so it
    differs from a solo run's hash (the random streams differ)."""
    first, seeds = int(container["seed"]), int(container.get("seeds", 1))
    return config_hash({**container, "seed": first + k, "seeds": {"size": seeds, "first_seed": first}})


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
    if not (isinstance(s, dict) and s.get("status") in FINISHED
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
    with claim_run_dir(run_dir):  # the members lock their own folders
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
               "runs": {f"seed{m['seed']}": m["status"] for m in members}, "overrides": _overrides()}
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
                             compile=bool(cfg.get("compile", False)), grad_clip=build.grad_clip_config(cfg),
                             starts=build.member_starts(cfg, task, generator))
    run_hash = config_hash(cfg)
    module.checkpoint_meta = {"config_hash": run_hash}
    if not reuse and ckpt.exists():
        move_aside(ckpt, "reuse is off")
    state = load_checkpoint(ckpt, run_hash, module)
    if state is not None:
        try:
            module.resume_from(state)
        except Exception as err:
            _resume_failed(ckpt, err)
        log.info("resuming %s from step %d", run_dir, module.step)
    start = module.step
    logger = build.make_logger(cfg, run_dir, resume_step=start if state is not None else None)
    trainer = build.make_trainer(cfg, logger)
    loader = torch.utils.data.DataLoader(range(module.start_chunk, module.n_chunks), batch_size=None)
    t0 = time.perf_counter()
    try:
        with interrupt.deferred():
            trainer.fit(module, loader)
    except BaseException as err:
        signum = interrupt.pending()
        if signum is not None:
            _stop_interrupted(cfg, run_dir, module, logger, signum, start, time.perf_counter() - t0)
        if state is not None and module.step == start and isinstance(err, Exception):
            build.finish_logger(logger)
            _resume_failed(ckpt, err)  # restoring the optimizer / objective state failed before any step
        status = "interrupted" if isinstance(err, KeyboardInterrupt | SystemExit) else "failed"
        reason = type(err).__name__ if status == "interrupted" else f"{type(err).__name__}: {err}"
        _record_failure(cfg, run_dir, module, logger, status, reason, time.perf_counter() - t0)
        env = environment_error(err)
        if env is not None and not env.filename:  # torch's writer names no file: name the run's folder
            raise OSError(env.errno, env.strerror, str(run_dir)) from err
        raise
    signum = interrupt.pending()
    if signum is not None and module.step < max_steps and not all(d is not None for d in module.diverged):
        _stop_interrupted(cfg, run_dir, module, logger, signum, start, time.perf_counter() - t0)
    summary = _write_members(cfg, run_dir, module, "complete", "", time.perf_counter() - t0)
    ckpt.unlink(missing_ok=True)
    build.finish_logger(logger)
    _wandb_runs(cfg, run_dir, summary)
    if signum is not None:  # the signal came after the last step: the run is complete, the process still stops
        raise interrupt.RunInterrupted(signum, f"interrupted by {interrupt.signal_name(signum)} after {run_dir} "
                                               "completed")
    return summary


def _stop_interrupted(cfg: DictConfig, run_dir: Path, module: Any, logger: Any, signum: int, start: int,
                      wall: float) -> None:
    """Save the resume checkpoint at the step boundary the module stopped at, record the run, raise."""
    name = interrupt.signal_name(signum)
    if module.step > start:  # steps were taken since the start (or the resume): optimizer state exists
        module.save_resume_checkpoint()
    _record_failure(cfg, run_dir, module, logger, "interrupted", f"{name} at step {module.step}", wall)
    ckpt = run_dir / "last.ckpt"
    where = f"checkpoint {ckpt} at step {module.step}" if ckpt.exists() else "no checkpoint"
    raise interrupt.RunInterrupted(signum, f"interrupted by {name} at step {module.step} of {run_dir} ({where}; "
                                           "run the same command again to resume)")


def _record_failure(cfg: DictConfig, run_dir: Path, module: Any, logger: Any, status: str, reason: str,
                    wall: float) -> None:
    """Write the summaries of a run that stopped early; a failure to write (full disk) never hides the cause."""
    summary = None
    try:
        summary = _write_members(cfg, run_dir, module, status, reason, wall)
    except OSError as err:
        if environment_error(err) is None:  # a full disk is reported once, by the entry point
            log.error("could not record the %s run in %s: %s", status, run_dir, err)
    try:
        build.finish_logger(logger)
    except Exception as err:
        log.error("could not close the logger of %s: %s", run_dir, err)
    if summary is not None and status != "interrupted":  # an interrupted run resumes: it is logged when it ends
        _wandb_runs(cfg, run_dir, summary)


def _wandb_runs(cfg: DictConfig, run_dir: Path, summary: dict[str, Any]) -> None:
    """logger=wandb: one W&B run per seed from the files just written (``ptforget.wandb_runs``)."""
    if cfg.logger.get("kind") == "wandb":
        from ptforget.wandb_runs import log_runs

        log_runs(cfg, run_dir, summary)


def _resume_failed(ckpt: Path, err: BaseException) -> None:
    first = str(err).splitlines()[0] if str(err) else ""
    move_aside(ckpt, f"could not be restored ({type(err).__name__}: {first})")
    raise _ResumeFailed(first) from err


def move_aside(path: Path, why: str) -> Path:
    """Rename ``path`` to ``<name>.aside-<time>-<pid>`` (kept for inspection) and log one line saying so."""
    aside = path.with_name(f"{path.name}.aside-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    log.warning("moved %s aside to %s (%s); the run starts from step 0", path, aside.name, why)
    return aside


def load_checkpoint(path: Path, run_hash: str, module: Any) -> dict[str, Any] | None:
    """The resume state in ``path`` when it is this run's own checkpoint and fits ``module``; None otherwise.

    A file that cannot be read, is not a ptforget checkpoint, belongs to another config or does not fit the
    module (weights' names and shapes, optimizer groups) is moved aside (kept) and the run starts over.
    """
    if not path.exists():
        return None
    try:  # tensors, containers and numbers only: a planted pickle is never run (it is a damaged checkpoint)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = " ".join(str(err).split())[:160]
        move_aside(path, f"not a checkpoint that loads without running code ({type(err).__name__}: {first})")
        return None
    problem = checkpoint_problem(state, run_hash, module)
    if problem is not None:
        move_aside(path, problem)
        return None
    return state


def checkpoint_problem(state: Any, run_hash: str, module: Any) -> str | None:
    """Why ``state`` cannot resume ``module`` (a run of config ``run_hash``), or None."""
    if not isinstance(state, dict):
        return f"not a ptforget checkpoint (a {type(state).__name__})"
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        return f"not a ptforget checkpoint (no {', '.join(missing)})"
    if state["config_hash"] != run_hash:
        return f"a checkpoint of another config ({state['config_hash']}; this run is {run_hash})"
    step = state["step"]
    if not (isinstance(step, int) and 0 <= step <= module.max_steps):
        return f"step {step!r} outside [0, {module.max_steps}]"
    if not (isinstance(state["histories"], list) and len(state["histories"]) == module.S):
        return f"histories of another number of seeds (this run has {module.S})"
    weights = state["weights"]
    if not isinstance(weights, dict) or set(weights) != set(module.state_dict()):
        return "weights of another model (the parameter names differ)"
    # parameters have fixed shapes (metric states and some buffers are filled during the run: names suffice)
    for name, t in module.named_parameters():
        if not isinstance(weights.get(name), torch.Tensor) or weights[name].shape != t.shape:
            return f"weights of another model ({name} has another shape)"
    try:
        opt = module.configure_optimizers()
        opt = opt["optimizer"] if isinstance(opt, dict) else opt
        opt.load_state_dict(state["optimizer"])  # a throwaway optimizer: checks the groups and their sizes
    except Exception as err:
        return f"optimizer state of another model ({type(err).__name__})"
    return None


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
            write_density(run_dir, module, 0)
            write_outputs(run_dir, module.histories[0], summary)
            return summary
        member = {**container, "seed": first + k, "seeds": {"size": seeds, "first_seed": first}}  # see member_hash
        summary = summarize(member, module, st, why, wall, member=k)
        summary["ensemble"] = {"seeds": seeds, "member": k, "first_seed": first, "batched": True}
        write_density(run_dir / f"seed{first + k}", module, k)
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
    target = target_values(module.task)
    forgetting = ({"old_mass_first_minus_last": om["first"] - om["last"], "old_mass_max_minus_last": om["max"]
                   - om["last"], "old_mass_deficit": target["old_mass"] - om["last"]} if om else {})
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
        "start": module.start[member] if module.start else None,
        "target": target,
        "undefined": undefined_metrics(history),
        "overrides": _overrides(),
        "choices": _choices(),
        "config": {k: v for k, v in cfg.items() if k != "hydra"},
    }


def undefined_metrics(history: list[dict[str, float]]) -> dict[str, str]:
    """Why a metric is NaN in a run (its metrics stay NaN rather than a number that means nothing): the old core
    held (almost) none of the model's mass at some evaluations, so its location ``core_pos`` and the ``drift``
    measured from it are undefined there."""
    from ptforget.generators.base import CORE_MIN_MASS

    empty = [int(r["step"]) for r in history if "core_pos" in r and r["core_pos"] != r["core_pos"]]
    if not empty:
        return {}
    why = (f"the old core (1 to 3 units beyond mu_o*) held less than {CORE_MIN_MASS:g} of the model's mass at "
           f"{len(empty)} of {len(history)} evaluations (first at step {empty[0]}): the old mode has left it, so "
           "its location is undefined there (NaN; min/max are over the defined values)")
    return {"core_pos": why, "drift": why}


def target_values(task: Any) -> dict[str, float]:
    """What the run is measured against: p*'s old-region mass and old weight beta* (forgetting is the shortfall
    of the model's old-region mass below the target's, not below where the run started)."""
    from ptforget.metrics import target_region_stats

    return {"old_mass": float(target_region_stats(task)[0]), "weight": float(task.beta_star)}


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def _choices() -> dict[str, str | None]:
    """The config-group options this run was composed from (``generator: realnvp``), Hydra's own groups left out;
    empty outside a Hydra run (the check composes its configs itself)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = dict(HydraConfig.get().runtime.choices)
    except Exception:
        return {}
    return {str(k): (None if v is None else str(v)) for k, v in choices.items() if not str(k).startswith("hydra/")}


DENSITY_FILE = "density.npz"


def write_density(run_dir: Path, module: Any, member: int = 0) -> None:
    """``density.npz``: the model's density snapshots of one member (``steps`` (K,), ``grid`` (G, d), ``shape``,
    ``log_q`` (K, G)) beside the target's ``log_p_star`` (G,) and the modes ``mu_old`` / ``mu_new`` (d,); nothing
    for a task above 2-D or a run without snapshots."""
    from ptforget.io import atomic_replace
    from ptforget.module import density_grid

    grid = density_grid(module.task)
    if grid is None or not module.density:
        return
    pts, shape = grid
    steps = sorted(module.density)
    task = module.task
    with torch.no_grad():
        log_p = task.log_prob("star", pts.to(task.mu_old.device)).cpu()
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_replace(run_dir / DENSITY_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, steps=np.asarray(steps, dtype=np.int64), grid=pts.numpy(), shape=np.asarray(shape),
                 log_q=torch.stack([module.density[t][member] for t in steps]).numpy(), log_p_star=log_p.numpy(),
                 mu_old=task.mu_old.cpu().numpy(), mu_new=task.mu_new.cpu().numpy())


def read_density(run_dir: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of a run's ``density.npz`` (see ``write_density``), or None when it has none or it is unreadable."""
    try:
        with np.load(Path(run_dir) / DENSITY_FILE) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        return None


def density_snapshots(data: dict[str, np.ndarray]) -> tuple[list[tuple], dict[str, Any]]:
    """(snapshots, task_info) for ``plots.plot_density_evolution`` from ``read_density``'s arrays: 1-D curves or
    2-D meshes of the density at each recorded step, the target p* and the modes."""
    shape = tuple(int(v) for v in data["shape"])
    q = np.exp(data["log_q"].astype(np.float64))
    p = np.exp(data["log_p_star"].astype(np.float64))
    g = data["grid"]
    if len(shape) == 1:
        xs = g[:, 0]
        snaps = [(int(t), xs, qi) for t, qi in zip(data["steps"], q, strict=True) if np.isfinite(qi).all()]
        return snaps, {"target": (xs, p), "old_mean": data["mu_old"], "new_mean": data["mu_new"], "xlabel": "x"}
    X, Y = g[:, 0].reshape(shape), g[:, 1].reshape(shape)
    snaps = [(int(t), X, Y, qi.reshape(shape)) for t, qi in zip(data["steps"], q, strict=True)
             if np.isfinite(qi).all()]
    return snaps, {"target": (X, Y, p.reshape(shape)), "old_mean": data["mu_old"], "new_mean": data["mu_new"]}


def density_figure(run_dir: Path, title: str | None = None, out: Path | None = None) -> Path | None:
    """``density.png`` in ``run_dir`` (or ``out``) from its ``density.npz`` (None when there is nothing to draw)."""
    data = read_density(run_dir)
    if data is None:
        return None
    snaps, info = density_snapshots(data)
    if not snaps:
        return None
    if title is None:
        try:
            s = read_json(Path(run_dir) / "summary.json")
            title = f"{s.get('generator')} / {s.get('objective')}, seed {s.get('seed')}: density over training"
        except (OSError, ValueError):
            title = "density over training"
    from ptforget import plots

    return plots.plot_density_evolution(snaps, out or Path(run_dir) / "density.png", {**info, "title": title})


def write_outputs(run_dir: Path, history: list[dict[str, float]], summary: dict[str, Any]) -> None:
    """trajectory.csv first, summary.json last: a summary on disk means the trajectory is complete."""
    write_csv(run_dir / "trajectory.csv", history)
    write_json(run_dir / "summary.json", summary)
