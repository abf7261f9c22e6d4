"""Fake sweep folders (hand-written summary.json / trajectory.csv files, no training) for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (objective, delta) -> final old_mass per seed 0, 1, 2
FINAL_OLD_MASS = {
    ("fkl", 3): [0.1, 0.2, 0.4],
    ("fkl", 6): [0.01, 0.03, 0.02],
    ("rkl", 3): [0.5, 0.49, 0.51],
    ("rkl", 6): [0.45, 0.5, 0.55],
}


def _summary(objective: str, delta: int, seed: int, old_mass: float | None, status: str = "complete",
             diverged_step: int | None = None, overrides_in_summary: bool = True) -> dict:
    s = {
        "status": status, "reason": "loss is nan" if status == "diverged" else "", "diverged_step": diverged_step,
        "seed": seed, "config_hash": f"h{objective}{delta}{seed}", "generator": "GaussianMixture",
        "objective": objective, "steps": 100 if status == "complete" else 40, "max_steps": 100, "wall_time_s": 0.5,
        "final": {"old_mass": old_mass, "drift": 0.1 * delta + 0.01 * seed, "new_error": "inf" if old_mass is None
                  else 0.05, "weight": old_mass},
        "extremes": {},
        "forgetting": {"old_mass_first_minus_last": None if old_mass is None else 0.5 - old_mass,
                       "old_mass_max_minus_last": None if old_mass is None else 0.5 - old_mass},
        "pretrain": {},
    }
    if overrides_in_summary:
        s["overrides"] = ["logger=none", "trainer.max_steps=100", f"objective={objective}", f"seed={seed}",
                          f"task.delta={delta}"]
    return s


def _write_run(run: Path, summary: dict, delta: int, yaml_overrides: bool) -> None:
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    if yaml_overrides:
        (run / ".hydra").mkdir()
        ov = ["logger=none", "trainer.max_steps=100", f"objective={summary['objective']}", f"seed={summary['seed']}",
              f"task.delta={delta}"]
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ov))
    final_old_mass = summary["final"]["old_mass"]
    end = 0.3 if final_old_mass is None else final_old_mass
    lines = ["step,old_mass,loss"]
    for i, step in enumerate((0, 50, 100)):
        loss = "" if i == 0 else f"{1.0 / step:.4f}"
        lines.append(f"{step},{0.5 + (end - 0.5) * i / 2:.6f},{loss}")
    (run / "trajectory.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun folder: 2 objectives x 2 deltas x 3 seeds (runs 0-11) plus one diverged run (12).

    Runs with an odd index keep their overrides only in .hydra/overrides.yaml.
    """
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    idx = 0
    for (objective, delta), values in FINAL_OLD_MASS.items():
        for seed, v in enumerate(values):
            odd = idx % 2 == 1
            _write_run(root / str(idx), _summary(objective, delta, seed, v, overrides_in_summary=not odd), delta, odd)
            idx += 1
    _write_run(root / str(idx), _summary("fkl", 6, 3, None, status="diverged", diverged_step=40), 6, False)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return tmp_path / "multirun"


def is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return data[:8] == PNG_SIGNATURE and len(data) > 2000
