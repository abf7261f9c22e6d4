"""Wall time of the quick check with the default executor (processes) against executor=inline, in one script.

Each launch gets a fresh output folder and a fresh pretraining cache, so both pay the same pretraining; the
ratio is what issue "the check as a pipeline" asks for (target: processes <= 0.6 x inline on 2 cores).

Usage: python scripts/bench_check.py [--claims all] [extra ptforget-check overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def launch(executor: str, claims: str, extra: list[str], root: Path) -> tuple[float, dict]:
    out = root / executor
    env = {**os.environ, "PTFORGET_CACHE_DIR": str(root / f"cache-{executor}"), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-c", "from ptforget.cli import check_main; check_main()", f"executor={executor}",
           f"claims={claims}", f"hydra.run.dir={out}", "quiet=true", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"{executor} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / "verdicts.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--claims", default="all")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        res = {ex: launch(ex, args.claims, args.extra, Path(d)) for ex in ("processes", "inline")}
    for ex, (wall, p) in res.items():
        print(f"{ex:>10}: {wall:7.1f} s wall, {p['runs_trained']} runs, {p['jobs']} jobs, executor {p['executor']}")
    same = [v["values"] for v in res["processes"][1]["verdicts"]] == [v["values"] for v in res["inline"][1]["verdicts"]]
    print(f"ratio processes / inline: {res['processes'][0] / res['inline'][0]:.2f} (target <= 0.6); "
          f"identical verdict values: {same}; load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
