"""Human-readable forgetting summary of one run: a table on a terminal, one line per job in a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from ptforget.terminal import line, print_rich_table

ROWS = [
    ("old_mass", "old-region mass"),
    ("weight", "old component weight"),
    ("drift", "old-core drift since the start"),
    ("region_drift", "old-region mean - p*'s (region view)"),
    ("comp_drift", "old-mean drift ||mu_o - mu_o*||"),
    ("new_error", "new-mode error (region view)"),
    ("comp_new_error", "new-mean error ||mu_n - mu_n*||"),
    ("kl_q_pstar", "KL(q || p*)"),
    ("kl_pstar_q", "KL(p* || q)"),
    ("comp_bc", "BC(learned old, new)"),
]


def print_summary(summary: dict[str, Any], run_dir: Path | None = None) -> None:
    """The run's metrics (start, final, min, max) as a table fitted to the terminal, then where its files are
    (whole paths, one per line, when piped)."""
    title = (f"{summary['generator']} / {summary['objective']}: {summary['status']} after {summary['steps']} steps"
             f" ({summary['wall_time_s']:.1f} s, seed {summary['seed']})")
    table = Table(title=title)
    for col in ("metric", "start", "final", "min", "max"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    ext = summary["extremes"]
    for key, label in ROWS:
        if key in ext:
            e = ext[key]
            table.add_row(label, *(f"{e[k]:.4g}" for k in ("first", "last", "min", "max")))
    target = (summary.get("target") or {}).get("old_mass")
    if target is not None and "old_mass" in ext:
        table.caption = f"target p*: old-region mass {target:.4g}, old weight {summary['target'].get('weight', 0):.4g}"
    print_rich_table(table)
    if summary.get("reason"):
        line(f"reason: {summary['reason']}")
    if run_dir is not None:
        line(f"outputs: {run_dir}  (trajectory.csv, summary.json"
             + (", density.png" if (Path(run_dir) / "density.png").exists() else "") + ")")


def job_line(summary: dict[str, Any], run_dir: Path, job: int | str | None = None,
             overrides: list[str] | None = None) -> str:
    """One line for a job of a sweep: what it ran, its status, the old mass from start to end against the target,
    and its folder."""
    members = summary.get("members") or [summary]
    first = members[0]
    head = f"[job {job}] " if job is not None else ""
    what = " ".join(o for o in (overrides or []) if not o.startswith(("hydra.", "seed="))) or "defaults"
    status = summary.get("status", first.get("status"))
    steps, wall = first.get("steps"), summary.get("wall_time_s", first.get("wall_time_s", 0.0))
    ext = [m.get("extremes", {}).get("old_mass") for m in members]
    mass = ""
    if all(e is not None for e in ext):
        start = sum(e["first"] for e in ext) / len(ext)
        end = sum(e["last"] for e in ext) / len(ext)
        target = (first.get("target") or {}).get("old_mass")
        seeds = f" (mean of {len(ext)} seeds)" if len(ext) > 1 else ""
        mass = f"; old-region mass {start:.3g} -> {end:.3g}" + (f" (p*: {target:.3g})" if target is not None else "")
        mass += seeds
    return f"{head}{what}: {status}, {steps} steps, {wall:.1f} s{mass}; {run_dir}"
