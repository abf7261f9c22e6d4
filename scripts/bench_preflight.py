"""Benchmark: how long a large sweep waits before its first job starts (issue: ``-m seed=range(0,3000)``).

Measures, in one process,
  1. the command-line preflight of ``-m seed=range(0,N)`` (``ptforget.cli.preflight_argv``), after one warm-up
     preflight so that the one-off imports (Lightning, torch) are not counted; and the same for a sweep that also
     swaps a config group, and one over a key other keys interpolate (``paths.cache_dir``);
  2. with ``--to-job0``: a real ``ptforget-train -m seed=range(0,N)`` subprocess, from its start until job 0 writes
     its first file (imports, preflight, Hydra's sweep set-up and job 0's own composition included).

    python scripts/bench_preflight.py [--values 3000] [--to-job0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def preflight_seconds(argv: list[str]) -> tuple[float, int]:
    from ptforget import cli, validate

    t0 = time.perf_counter()
    n = cli.preflight_argv(argv, "train", validate.preflight)
    return time.perf_counter() - t0, n


def time_to_job0(n: int, root: Path) -> float:
    """Seconds from launching ``ptforget-train -m seed=range(0,n)`` until job 0's folder holds .hydra/config.yaml."""
    sweep = root / "sweep"
    exe = Path(sys.executable).with_name("ptforget-train")
    env = {**os.environ, "PTFORGET_OUTPUT_DIR": str(root / "out"), "WANDB_MODE": "disabled"}
    cmd = [str(exe), "-m", f"seed=range(0,{n})", "trainer.max_steps=1", "eval_every=1", "logger=none",
           "quiet=true", f"hydra.sweep.dir={sweep}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while not (sweep / "0" / ".hydra" / "config.yaml").exists():
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--values", type=int, default=3000)
    p.add_argument("--to-job0", action="store_true", help="also time a real ptforget-train sweep until job 0")
    args = p.parse_args()
    n = args.values
    root = Path(tempfile.mkdtemp(prefix="ptforget-bench-"))
    os.environ.setdefault("PTFORGET_OUTPUT_DIR", str(root / "out"))
    os.environ.setdefault("PTFORGET_CACHE_DIR", str(root / "cache"))
    try:
        warm, _ = preflight_seconds(["-m", "seed=0,1"])
        print(f"warm-up preflight (imports Lightning, torch): {warm:.2f} s")
        for argv in (["-m", f"seed=range(0,{n})"],
                     ["-m", f"seed=range(0,{n})", "objective=fkl,rkl"],
                     ["-m", f"paths.cache_dir={root}/c1,{root}/c2", f"seed=range(0,{n})"]):
            dt, checked = preflight_seconds(argv)
            print(f"preflight {' '.join(argv)}: {dt:.2f} s ({checked} configs checked, "
                  f"{1e3 * dt / max(checked, 1):.2f} ms each)")
        if args.to_job0:
            print(f"ptforget-train -m seed=range(0,{n}): job 0 started after {time_to_job0(n, root):.1f} s "
                  "(process start, imports and preflight included)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
