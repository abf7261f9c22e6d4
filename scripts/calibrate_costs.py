"""Calibrate the per-family step costs the families declare (``step_cost``, read by ``ptforget-check dry_run=true``):
whole ``run_training`` calls on one thread, reverse KL, batch 256, the quick profile's model settings.

Per variant: a 1-member run of N and 3N steps (evaluation at the end only) gives the fixed cost of a step; an
8-member run of 3N steps gives the per-sample cost (members x batch); the same 8-member run evaluating every 10 steps
gives the cost of an evaluation. Prints ``StepCost(...)`` lines to paste into the families.

Usage: taskset -c 0 python scripts/calibrate_costs.py [--steps 100] [--only gmm,mdn,flow1d,flow2d,realnvp]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUICK_FLOW = ["generator.transforms=2", "generator.hidden=[32,32]", "generator.pretrain.steps=0"]
VARIANTS = {
    "gmm": ["generator=gmm"],
    "mdn": ["generator=mdn", "generator.pretrain.steps=0"],
    "flow1d": ["generator=flow", "task.dim=1", *QUICK_FLOW],
    "flow2d": ["generator=flow", "task.dim=2", *QUICK_FLOW],
    "realnvp": ["generator=realnvp", "task.dim=2", *QUICK_FLOW],
}


def run_s(overrides: list[str], steps: int, seeds: int, eval_every: int) -> float:
    from hydra import compose, initialize_config_module

    from ptforget.train import run_training

    with initialize_config_module("ptforget.conf", version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", "quiet=true", "checkpoint_every=0", "objective=rkl",
                                          f"trainer.max_steps={steps}", f"seeds={seeds}",
                                          f"eval_every={eval_every}", *overrides])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run_training(cfg, d)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--only", default=",".join(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, S, batch = args.steps, 8, 256
    for name in args.only.split(","):
        o = VARIANTS[name]
        run_s(o, 10, 1, 10)  # warm-up
        a, b = run_s(o, n, 1, n), run_s(o, 3 * n, 1, 3 * n)
        fixed = (b - a) / (2 * n)
        c = run_s(o, 3 * n, S, 3 * n)
        per_sample = max((c - b) / (3 * n) / ((S - 1) * batch), 0.0)
        e = run_s(o, 3 * n, S, 10)
        evals = 3 * n // 10 - 1
        eval_s = max((e - c) / evals, 0.0)
        print(f"{name:8s} StepCost(fixed_ms={1e3 * fixed:.3f}, per_sample_us={1e6 * per_sample:.4f}, "
              f"eval_ms={1e3 * eval_s:.2f})   runs: {a:.1f} {b:.1f} {c:.1f} {e:.1f} s", flush=True)


if __name__ == "__main__":
    main()
