"""Benchmark: the same GMM reverse-KL run as a plain PyTorch loop and through ptforget's Lightning path.

Both run in this process, one after the other, with the same config (2000 steps, batch 256, Adam, one thread);
the ratio Lightning / plain is the framework overhead. Usage: python scripts/bench.py [--steps N] [--repeats R]
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


def lightning_path(steps: int, batch: int, eval_every: int, n_eval: int) -> float:
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", "quiet=true", f"trainer.max_steps={steps}",
                                          f"objective.batch={batch}", f"eval_every={eval_every}",
                                          f"n_eval={n_eval}", "trainer.accelerator=cpu"])
    with tempfile.TemporaryDirectory() as d:
        summary = run_training(cfg, d)
    return summary["wall_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--n-eval", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
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
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
