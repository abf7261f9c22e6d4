"""Benchmark, all in one process and one run so the figures are comparable ratios:

1. Framework overhead: the same GMM reverse-KL run as a plain PyTorch loop and through ptforget's Lightning path
   (2000 steps, batch 256, Adam, eval every 50, one thread); target ratio lightning / plain <= 1.2.
2. Batched seeds: seed-steps/s of one ``seeds=S`` run (S = 1, 8, 32; one vmapped step for all members) against
   S separate runs one after another (the sequential rate is measured on min(S, 4) runs; it does not depend on S);
   target >= 10x at S = 32.
3. Peak RSS of the process.

Usage: python scripts/bench.py [--steps N] [--repeats R] [--seeds 1,8,32] [--seed-steps N] [--generator gmm]
       [--device cpu|cuda] [--compile]
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time

import torch
from hydra import compose, initialize_config_module

from ptforget.generators import GaussianMixture
from ptforget.metrics import measure
from ptforget.objectives import ReverseKL
from ptforget.tasks import TwoModeTask
from ptforget.train import run_training


def plain_loop(steps: int, batch: int, eval_every: int, n_eval: int) -> float:
    """The reference: hand-written loop with the same objective, optimizer and evaluation cadence."""
    torch.manual_seed(0)
    task = TwoModeTask(dim=2, delta=4.0)
    gen = GaussianMixture(task)
    obj = ReverseKL(batch=batch)
    obj.setup(gen, task)
    opt = torch.optim.Adam(gen.param_groups(0.01))
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss, _ = obj.loss(gen, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            m = measure(gen, task, n_eval)
            [float(v) for v in m.values()]
    return time.perf_counter() - t0


def _cfg(overrides: list[str]):
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("train", overrides=["logger=none", "quiet=true", "checkpoint_every=0", *overrides])


def lightning_path(steps: int, batch: int, eval_every: int, n_eval: int, device: str = "cpu",
                   compile: bool = False) -> float:
    cfg = _cfg([f"trainer.max_steps={steps}", f"objective.batch={batch}", f"eval_every={eval_every}",
                f"n_eval={n_eval}", f"trainer.accelerator={device}", f"compile={str(compile).lower()}"])
    with tempfile.TemporaryDirectory() as d:
        summary = run_training(cfg, d)
    return summary["wall_time_s"]


def seeds_rate(generator: str, seeds: int, steps: int, batched: bool, device: str) -> float:
    """Seed-steps per second of a whole run_training call (set-up included): batched, or one seed at a time."""
    base = [f"generator={generator}", f"trainer.max_steps={steps}", f"trainer.accelerator={device}"]
    runs = 1 if batched else min(seeds, 4)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for k in range(runs):
            cfg = _cfg([*base, f"seed={k}", f"seeds={seeds if batched else 1}"])
            run_training(cfg, f"{d}/{k}")
    wall = time.perf_counter() - t0
    return (seeds if batched else runs) * steps / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--n-eval", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", default="1,8,32", help="comma-separated ensemble sizes")
    ap.add_argument("--seed-steps", type=int, default=500, help="steps per run in the batched-seeds comparison")
    ap.add_argument("--generator", default="gmm", help="generator of the batched-seeds comparison")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="also time the Lightning path with compile=true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    kw = dict(steps=args.steps, batch=args.batch, eval_every=args.eval_every, n_eval=args.n_eval)
    lightning_path(**{**kw, "steps": 20})  # warm-up: imports, first Trainer
    plain, light = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(**kw))
        light.append(lightning_path(**kw))
    p, l = min(plain), min(light)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print(f"GMM reverse-KL, {args.steps} steps, batch {args.batch}, eval every {args.eval_every} "
          f"(best of {args.repeats})")
    print(f"plain loop       {p:7.3f} s   {1e3 * p / args.steps:6.3f} ms/step")
    print(f"lightning path   {l:7.3f} s   {1e3 * l / args.steps:6.3f} ms/step")
    print(f"ratio lightning/plain: {l / p:.2f}")
    if args.compile:
        lightning_path(**{**kw, "steps": 20}, compile=True)  # compile once (inductor caches the kernels)
        c = lightning_path(**kw, compile=True)
        print(f"lightning + torch.compile {c:7.3f} s   {1e3 * c / args.steps:6.3f} ms/step (compiled kernels cached)")
    print(f"\nbatched seeds: {args.generator} reverse KL, {args.seed_steps} steps per run, device {args.device}")
    print(f"{'S':>5} {'batched seed-steps/s':>22} {'sequential seed-steps/s':>25} {'speed-up':>9}")
    seeds_rate(args.generator, 2, 20, True, args.device)  # warm-up (vmap, pretraining cache)
    seq = seeds_rate(args.generator, 4, args.seed_steps, False, args.device)
    for S in [int(x) for x in args.seeds.split(",")]:
        b = seeds_rate(args.generator, S, args.seed_steps, True, args.device)
        print(f"{S:>5} {b:>22.0f} {seq:>25.0f} {b / seq:>8.1f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
