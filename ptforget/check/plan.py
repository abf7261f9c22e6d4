"""Planning: every run the selected claims need, composed into training configs and deduplicated by config hash.

A spec with S seeds becomes one job (``seeds=S``) when its objective trains seeds together (``batchable``) and
``batch_seeds`` is on, else S solo jobs (``seed=k``) that an executor can spread over workers. Every spec's runs
live in ``runs/<family>-<hash>/`` (one seed: the folder itself; several: ``seed<k>/`` inside it), named by the
hash of its composed config, so a re-launch with any selection of claims finds the same folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptforget.build import target_class
from ptforget.check.context import FLOWS, Context
from ptforget.check.registry import Claim
from ptforget.check.runs import RunSpec
from ptforget.errors import ConfigError
from ptforget.io import read_json
from ptforget.train import config_hash, finished_summary

#: rough cost of one optimizer step per family, relative to the GMM (orders the jobs: the longest start first)
STEP_COST = {"gmm": 1.0, "mdn": 1.6, "flow": 10.0, "realnvp": 3.0}


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
            steps = int(group_cfg.trainer.max_steps)
            unit = STEP_COST.get(spec.family, 1.0) * steps
            if n > 1 and batch and batchable(group_cfg):
                parts = [(group_cfg, group, n, unit * (1 + 0.1 * n) if spec.family not in FLOWS else unit * n / 2)]
            elif n > 1:
                parts = [(ctx.config(spec, k, 1), group / f"seed{k}", 1, unit) for k in seeds]
            else:
                parts = [(group_cfg, group, 1, unit)]
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
            out[key] = Job(key, j.cfg, j.path, j.family, [f"pretrain {j.family}"], 1,
                           STEP_COST.get(j.family, 1.0) * int(pre), kind="pretrain")
    return list(out.values())


def job_payload(job: Job) -> dict[str, Any]:
    """What a worker needs to run a job: its kind, the resolved config as plain containers and the folder."""
    return {"kind": job.kind, "cfg": OmegaConf.to_container(job.cfg, resolve=True), "path": str(job.path)}
