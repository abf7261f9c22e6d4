"""What a claim asks for (``RunSpec``) and what it gets back (``Result``: one ``Run`` per seed, read from files).

A spec names a generator family, its overrides of the training config and how many seeds; the engine composes it
into a full training config (the profile's per-family settings first, then the spec's overrides), so the claim's
theory prediction can be computed from exactly the config the run used. Results are read only from the run
folders (``summary.json``, ``trajectory.csv``), whichever executor trained them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptforget.io import read_json, read_trajectory


@dataclass(frozen=True)
class RunSpec:
    """One configuration a claim needs.

    Args:
        label: a short name (shown in the plan and progress lines; several claims may share a run).
        family: generator group option (gmm, mdn, flow, realnvp).
        overrides: training-config overrides (Hydra syntax), applied after the profile's family settings.
        seeds: number of seeds (None: the profile's number for the family).
    """

    label: str
    family: str = "gmm"
    overrides: tuple[str, ...] = ()
    seeds: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", tuple(str(o) for o in self.overrides))


@dataclass
class Run:
    """One finished seed: its summary and trajectory columns."""

    path: Path
    summary: dict[str, Any]
    traj: dict[str, np.ndarray] = field(repr=False)

    @property
    def final(self) -> dict[str, float]:
        return self.summary.get("final") or {}

    def col(self, key: str) -> np.ndarray:
        """A trajectory column (KeyError names the columns there are)."""
        if key not in self.traj:
            raise KeyError(f"{self.path}/trajectory.csv has no column {key!r}; columns: {sorted(self.traj)}")
        return self.traj[key]

    @property
    def steps(self) -> np.ndarray:
        return self.col("step")


@dataclass
class Result:
    """Every seed of one spec, plus the composed config it ran with."""

    spec: RunSpec
    path: Path
    runs: list[Run]
    config: Any = field(repr=False, default=None)
    reused: bool = False

    def values(self, stat: str | Callable[[Run], float]) -> list[float]:
        """One number per seed: a final metric by name, or any function of a run."""
        if isinstance(stat, str):
            return [float(r.final.get(stat, float("nan"))) for r in self.runs]
        return [float(stat(r)) for r in self.runs]

    def curves(self, key: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(steps, values) of one trajectory column per seed (for figures with bands over seeds)."""
        return [(r.steps, r.col(key)) for r in self.runs]

    def __len__(self) -> int:
        return len(self.runs)


class UnfinishedRun(RuntimeError):
    """A run folder whose summary says the run has not ended (interrupted, failed): never judged."""


def load_runs(path: Path, seeds: Sequence[int]) -> list[Run]:
    """The runs of a finished job folder: ``path`` itself for one seed, ``path/seed<k>`` for several.

    A run whose summary status is not final (complete or diverged) raises UnfinishedRun: a half-trained run's
    numbers (a preempted job's) must never be judged as its result.
    """
    from ptforget.train import FINISHED

    dirs = [path] if len(seeds) == 1 else [path / f"seed{s}" for s in seeds]
    runs = []
    for d in dirs:
        summary = read_json(d / "summary.json")
        status = summary.get("status")
        if status not in FINISHED:
            raise UnfinishedRun(f"{d} holds an unfinished run (status {status!r}: {summary.get('reason', '')}); "
                                "relaunch the check into its folder to resume it")
        runs.append(Run(d, summary, read_trajectory(d / "trajectory.csv")))
    return runs
