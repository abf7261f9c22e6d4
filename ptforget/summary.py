"""Human-readable forgetting summary of one run (rich table on stdout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROWS = [
    ("old_mass", "old-region mass"),
    ("weight", "old component weight"),
    ("drift", "old-mode drift (region view)"),
    ("comp_drift", "old-mean drift ||mu_o - mu_o*||"),
    ("new_error", "new-mode error (region view)"),
    ("comp_new_error", "new-mean error ||mu_n - mu_n*||"),
    ("kl_q_pstar", "KL(q || p*)"),
    ("kl_pstar_q", "KL(p* || q)"),
    ("comp_bc", "BC(learned old, new)"),
]


def print_summary(summary: dict[str, Any], run_dir: Path | None = None) -> None:
    console = Console(highlight=False)
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
    console.print(table)
    if summary.get("reason"):
        console.print(f"reason: {summary['reason']}")
    if run_dir is not None:
        console.print(f"outputs: {run_dir}/trajectory.csv, {run_dir}/summary.json")
