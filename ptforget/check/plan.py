"""Planning: every run the selected claims need, composed into training configs and deduplicated by config hash.

A spec with S seeds becomes one job (``seeds=S``) when its objective trains seeds together (``batchable``) and
``batch_seeds`` is on, else S solo jobs (``seed=k``) that an executor can spread over workers. Every spec's runs
live in ``runs/<family>-<hash>/`` (one seed: the folder itself; several: ``seed<k>/`` inside it), named by the
hash of its composed config, so a re-launch with any selection of claims finds the same folders.

Every job carries its estimated seconds (``job_seconds``: the family's declared ``StepCost``, see
``ptforget.generators.base``); ``dry_run`` prints the plan with the time per claim and in total before anything
trains (``ptforget-check dry_run=true``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptforget.build import target_class
from ptforget.check.context import Context
from ptforget.check.registry import Claim
from ptforget.check.runs import RunSpec
from ptforget.errors import ConfigError
from ptforget.io import read_json
from ptforget.train import config_hash, finished_summary

#: seconds of a run besides its steps and evaluations (building, Lightning's set-up, summaries; one thread)
RUN_OVERHEAD_S = 0.5


def _objective_batch(objective: DictConfig) -> int:
    if objective.get("batch") is not None:
        return int(objective.batch)
    return int(objective.get("groups", 1)) * int(objective.get("group_size", 256))


def job_seconds(cfg: DictConfig, members: int) -> float:
    """Estimated seconds of ``run_training(cfg)`` with ``members`` seeds trained together (one thread)."""
    cost = target_class(cfg.generator).planned_cost(cfg.generator, cfg.task)
    steps = int(cfg.trainer.max_steps)
    evaluations = math.ceil(steps / max(int(cfg.get("eval_every", 50)), 1)) + 1
    return RUN_OVERHEAD_S + cost.run_seconds(steps, members, _objective_batch(cfg.objective), evaluations)


def pretrain_seconds(cfg: DictConfig) -> float:
    """Estimated seconds of pretraining ``cfg``'s generator (a step of one member at the pretraining batch)."""
    pre = cfg.generator.get("pretrain") or {}
    cost = target_class(cfg.generator).planned_cost(cfg.generator, cfg.task)
    return RUN_OVERHEAD_S + cost.run_seconds(int(pre.get("steps", 0)), 1, int(pre.get("batch", 512)), 0)


@dataclass
class Job:
    """One call of ``run_training``: a composed config and its run folder."""

    key: str
    cfg: DictConfig = field(repr=False)
    path: Path
    family: str
    labels: list[str]
    seeds: int
    cost: float
    #: ``train`` (run_training) or ``pretrain`` (build the generator: fills the pretraining cache)
    kind: str = "train"

    def finished(self) -> bool:
        return self.kind == "train" and finished_summary(self.path, self.cfg) is not None

    def interrupted(self) -> bool:
        """Its run stopped on a signal (a preempted or cancelled job): running it again resumes from last.ckpt."""
        name = "ensemble.json" if self.seeds > 1 else "summary.json"
        try:
            return self.kind == "train" and read_json(self.path / name).get("status") == "interrupted"
        except (OSError, ValueError, AttributeError):
            return False


@dataclass
class Plan:
    """Unique jobs, and for each spec the folder and seeds its results are read from."""

    jobs: list[Job]
    layout: dict[RunSpec, tuple[Path, list[int], list[str]]]
    claims: dict[str, list[RunSpec]]

    def to_json(self, out: Path) -> dict[str, Any]:
        return {
            "jobs": [{"key": j.key, "path": j.path.relative_to(out).as_posix(), "family": j.family,
                      "labels": j.labels, "seeds": j.seeds} for j in self.jobs],
            "claims": {cid: [{"label": s.label, "family": s.family, "overrides": list(s.overrides),
                              "path": self.layout[s][0].relative_to(out).as_posix()} for s in specs]
                       for cid, specs in self.claims.items()},
        }


def batchable(cfg: DictConfig) -> bool:
    cls = target_class(cfg.objective)
    return bool(getattr(cls, "batchable", False))


def make_plan(ctx: Context, claims: list[Claim]) -> Plan:
    """Plan the runs of ``claims`` (in claim order; duplicates share one folder and one set of jobs)."""
    jobs: dict[str, Job] = {}
    layout: dict[RunSpec, tuple[Path, list[int], list[str]]] = {}
    per_claim: dict[str, list[RunSpec]] = {}
    batch = bool(ctx.cfg.get("batch_seeds", True))
    off = int(ctx.cfg.get("seed_offset", 0))
    for c in claims:
        try:
            specs = list(c.runs(ctx))
        except Exception as err:  # a claim's (a plugin's) own bug: one line naming it, before anything trains
            raise ConfigError("claims", c.id, f"a claim whose runs() lists its runs ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:160]})") from None
        per_claim[c.id] = specs
        for spec in specs:
            if spec in layout:
                continue
            n = ctx.seeds_of(spec)
            group_cfg = ctx.config(spec, off, n)
            group = ctx.out / "runs" / f"{spec.family}-{config_hash(group_cfg)}"
            seeds = list(range(off, off + n))
            if n > 1 and batch and batchable(group_cfg):
                parts = [(group_cfg, group, n, job_seconds(group_cfg, n))]
            elif n > 1:
                one = ctx.config(spec, off, 1)
                parts = [(ctx.config(spec, k, 1), group / f"seed{k}", 1, job_seconds(one, 1)) for k in seeds]
            else:
                parts = [(group_cfg, group, 1, job_seconds(group_cfg, 1))]
            keys = []
            for cfg, path, size, cost in parts:
                key = config_hash(cfg)
                if key not in jobs:
                    jobs[key] = Job(key, cfg, path, spec.family, [], size, cost)
                if spec.label not in jobs[key].labels:
                    jobs[key].labels.append(spec.label)
                keys.append(key)
            layout[spec] = (group, seeds, keys)
    return Plan(list(jobs.values()), layout, per_claim)


def pretrain_jobs(jobs: list[Job]) -> list[Job]:
    """One job per distinct pretrained generator the given jobs need (neural families), so that workers never
    pretrain the same generator at once; keyed by the generator and task configs (what q0 and its fit depend on)."""
    out: dict[str, Job] = {}
    for j in jobs:
        pre = OmegaConf.select(j.cfg, "generator.pretrain.steps", default=0)
        if j.kind != "train" or not pre:
            continue
        key = config_hash({"generator": OmegaConf.to_container(j.cfg.generator, resolve=True),
                           "task": OmegaConf.to_container(j.cfg.task, resolve=True)})
        if key not in out:
            out[key] = Job(key, j.cfg, j.path, j.family, [f"pretrain {j.family}"], 1, pretrain_seconds(j.cfg),
                           kind="pretrain")
    return list(out.values())


def estimate(plan: Plan, workers: int, reuse: bool = True) -> dict[str, Any]:
    """Estimated seconds per claim and in total: each job counted once, under the first claim that needs it
    (finished jobs, when reused, count nothing); the wall time spreads the jobs over ``workers`` longest first."""
    todo = [j for j in plan.jobs if not (reuse and j.finished())]
    pre = pretrain_jobs(todo)
    pending = {j.key: j for j in todo}
    seen: set[str] = set()
    per_claim: dict[str, dict[str, float]] = {}
    for cid, specs in plan.claims.items():
        row = {"jobs": 0, "runs": 0, "seconds": 0.0, "shared": 0}
        for spec in specs:
            for key in plan.layout[spec][2]:
                job = pending.get(key)
                if job is None:
                    continue
                if key in seen:
                    row["shared"] += 1
                    continue
                seen.add(key)
                row["jobs"] += 1
                row["runs"] += job.seeds
                row["seconds"] += job.cost
        per_claim[cid] = row
    serial = sum(j.cost for j in todo)
    return {"claims": per_claim, "pretrain_s": sum(j.cost for j in pre), "pretrain_jobs": len(pre),
            "train_s": serial, "jobs": len(todo), "reused": len(plan.jobs) - len(todo),
            "wall_s": _packed(pre, workers) + _packed(todo, workers), "workers": workers}


def _packed(jobs: list[Job], workers: int) -> float:
    """Wall seconds of ``jobs`` on ``workers`` (longest first, each to the least loaded worker)."""
    loads = [0.0] * max(workers, 1)
    for j in sorted(jobs, key=lambda j: -j.cost):
        loads[loads.index(min(loads))] += j.cost
    return max(loads)


def dry_run(plan: Plan, workers: int, reuse: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Print the plan with the estimated time per claim and in total; nothing trains. Returns the estimate."""
    est = estimate(plan, workers, reuse)
    say(f"{'claim':8s} {'jobs':>5s} {'runs':>5s} {'est. s':>8s}  (jobs shared with an earlier claim)")
    for cid, row in est["claims"].items():
        say(f"{cid:8s} {row['jobs']:5d} {row['runs']:5d} {row['seconds']:8.1f}" +
            (f"  (+{row['shared']} shared)" if row["shared"] else ""))
    say(f"pretraining: {est['pretrain_jobs']} generators, {est['pretrain_s']:.1f} s of one core")
    say(f"training: {est['jobs']} jobs ({est['reused']} reused), {est['train_s']:.1f} s of one core")
    say(f"estimated wall time on {workers} workers: {est['wall_s']:.0f} s (step costs from the families' "
        "StepCost, calibrated by scripts/calibrate_costs.py; the judging and figures are not included)")
    return est


def job_payload(job: Job) -> dict[str, Any]:
    """What a worker needs to run a job: its kind, the resolved config as plain containers and the folder."""
    return {"kind": job.kind, "cfg": OmegaConf.to_container(job.cfg, resolve=True), "path": str(job.path)}


def plan_dry_run(cfg: DictConfig, out: Path, compose: Callable[[list[str]], DictConfig], claims: list[Claim],
                 workers: int) -> dict[str, Any]:
    """``ptforget-check dry_run=true``: plan the selected claims, write plan.json, print the estimate."""
    from ptforget.io import write_json

    ctx = Context(cfg, out, compose)
    plan = make_plan(ctx, claims)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", plan.to_json(out))
    print(f"ptforget-check dry run: {len(claims)} claims, {len(plan.jobs)} jobs "
          f"({sum(j.seeds for j in plan.jobs)} runs); nothing is trained")
    return dry_run(plan, workers, bool(cfg.get("reuse", True)))
