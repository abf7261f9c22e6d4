"""Benchmark, all in one process and one run so the figures are comparable ratios (best of ``--repeats``, with
the spread over repeats):

1. One run: the GMM reverse-KL run (2000 steps, batch 256, Adam lr 0.01, eval every 50 with 4096 samples, one
   thread) as a plain PyTorch loop, through ptforget's Lightning path (eager, and ``compile=true`` with the
   compiled step cached), and, with ``--peer jax``, the same run in JAX (jit over a ``lax.scan`` chunk of
   ``eval_every`` steps). Targets: Lightning / plain <= 1.1; compiled / peer <= 3 (ms per step).
2. Batched seeds: seed-steps/s of whole ``seeds=S`` runs (``run_training``: set-up, evaluations and summaries
   included) against the peer (vmap over seeds; its wall with jit compilation, and compiled). Target: ratio >= 1.
3. Same science: the mean over seeds of the final old weight and old-region mass of ptforget and the peer
   (target: agree within 0.01).
4. Per-run overhead: what a short run (20 steps) costs besides its steps (``--only overhead`` runs this part
   alone, e.g. against an older checkout for a before / after).
5. Flows (``--peer flowjax``, or ``--only flows``): the quick profile's flow (NSF, 2 transforms of 32x32, 8 bins;
   ``--flow-dim``, default 1) trained by reverse KL, batch 256, at ``--flow-seeds`` members: member-steps/s of whole
   ``run_training`` calls (eager, and ``compile=true`` with its compilation done first and reported apart) beside the
   same run in JAX with flowjax (``scripts/flowjax_peer.py``) in steady state (its jit compilation reported apart),
   repeats interleaved. Target: ratio >= 1.

``--quick`` (under 3 minutes on an idle machine): the flow section alone, 200 steps, one repeat, no compile.
Run it on one core (``taskset -c 0``): torch and XLA are held to one thread each.

Usage: python scripts/bench.py [--peer jax,flowjax] [--steps N] [--repeats R] [--seeds 32,256] [--device cpu|cuda]
       [--only single|seeds|overhead|flows] [--no-compile] [--warm-inductor-cache] [--quick]
       [--flow-seeds 3,32] [--flow-dim 1] [--flow-steps 600]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module

from ptforget.generators import GaussianMixture
from ptforget.metrics import measure
from ptforget.objectives import ReverseKL
from ptforget.tasks import TwoModeTask
from ptforget.train import run_training

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cfg(overrides: list[str]):
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        return compose("train", overrides=["logger=none", "quiet=true", "checkpoint_every=0", *overrides])


def plain_loop(steps: int, batch: int, eval_every: int, n_eval: int, device: str = "cpu") -> float:
    """The reference: hand-written loop with the same objective, optimizer and evaluation cadence."""
    torch.manual_seed(0)
    task = TwoModeTask(dim=2, delta=4.0, device=device)
    gen = GaussianMixture(task).to(device)
    obj = ReverseKL(batch=batch)
    obj.setup(gen, task)
    opt = torch.optim.Adam(gen.param_groups(0.01), fused=True)  # the implementation ptforget's runs use
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss, _ = obj.loss(gen, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            m = measure(gen, task, n_eval)
            torch.stack(list(m.values())).tolist()  # one host sync per evaluation, as ptforget
    return time.perf_counter() - t0


def lightning_run(steps: int, batch: int, eval_every: int, n_eval: int, device: str = "cpu", compile: bool = False,
                  seeds: int = 1) -> tuple[float, float, dict[str, Any]]:
    """(wall of the whole run_training call, wall of its fit, summary)."""
    cfg = _cfg([f"trainer.max_steps={steps}", f"objective.batch={batch}", f"eval_every={eval_every}",
                f"n_eval={n_eval}", f"trainer.accelerator={device}", f"compile={str(compile).lower()}",
                f"seeds={seeds}"])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        summary = run_training(cfg, d)
        wall = time.perf_counter() - t0
    return wall, summary["wall_time_s"], summary


def _finals(summary: dict[str, Any]) -> tuple[float, float]:
    members = summary.get("members", [summary])
    return (statistics.fmean(m["final"]["weight"] for m in members),
            statistics.fmean(m["final"]["old_mass"] for m in members))


def _best(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    """(best, spread = worst / best - 1) over repeats."""
    vals = [fn() for _ in range(repeats)]
    return min(vals), max(vals) / min(vals) - 1


def _overhead(repeats: int) -> None:
    """A 20-step run (2 evaluations) through run_training, against the same 20 steps + 2 evaluations in the loop."""
    steps, kw = 20, {"batch": 256, "eval_every": 50, "n_eval": 4096}
    lightning_run(steps, **kw)  # warm-up: imports, first Trainer, caches
    plain_loop(steps, **kw)
    run, fit, plain = [], [], []
    for _ in range(max(repeats, 5)):
        plain.append(plain_loop(steps, **kw))
        w, f, _ = lightning_run(steps, **kw)
        run.append(w)
        fit.append(f)
    # the loop evaluates once (step 20 is not a multiple of 50); the run evaluates at steps 0 and 20
    p, w, f = min(plain), min(run), min(fit)
    print(f"\nper-run overhead: a {steps}-step run (best of {len(run)}; spread {max(run) / w - 1:.0%})")
    print(f"run_training wall {1e3 * w:8.1f} ms   of which fit {1e3 * f:7.1f} ms   "
          f"the same steps in the plain loop {1e3 * p:6.1f} ms")
    print(f"overhead besides the steps: {1e3 * (w - p):.1f} ms per run")


def flow_run(steps: int, seeds: int, dim: int, compile: bool, eval_every: int = 50, n_eval: int = 4096,
             device: str = "cpu") -> tuple[float, dict[str, Any]]:
    """(wall of a whole run_training call, summary): the quick profile's flow, reverse KL, batch 256, no
    pretraining (the step's cost does not depend on it)."""
    cfg = _cfg(["generator=flow", f"task.dim={dim}", "generator.transforms=2", "generator.hidden=[32,32]",
                "generator.bins=8", "generator.pretrain.steps=0", "objective=rkl", "objective.batch=256",
                f"trainer.max_steps={steps}", f"eval_every={eval_every}", f"n_eval={n_eval}", f"seeds={seeds}",
                f"compile={str(compile).lower()}", f"trainer.accelerator={device}"])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        summary = run_training(cfg, d)
        return time.perf_counter() - t0, summary


def _flows(args: argparse.Namespace, with_peer: bool) -> None:
    """Section 5: the flow against the flowjax peer, member-steps/s of whole runs, repeats interleaved."""
    import numpy as np

    steps, R, dim = args.flow_steps, args.repeats, args.flow_dim
    task = TwoModeTask(dim=dim, delta=4.0)
    print(f"\n5. flows: NSF (2 transforms, hidden 32x32, 8 bins), {dim}-D task, reverse KL, batch 256, {steps} steps, "
          f"eval every 50 with 4096 samples; member-steps/s of whole runs (best of {R})")
    print(f"{'S':>5} {'eager':>9} {'compile':>9} {'flowjax':>9} {'ratio':>7}  compilation: ptforget | flowjax;"
          "  final old mass: ptforget | flowjax")
    flow_run(20, 2, dim, False, device=args.device)  # warm-up: imports, first Trainer
    if with_peer:
        import flowjax_peer

        with torch.random.fork_rng(devices=[]):  # the standardisation ptforget's Flow draws (pretraining seed 0)
            torch.manual_seed(0)
            x = task.q0.sample((20000,))
        shift, scale = x.mean(0).numpy(), x.std(0).numpy()
    for S in [int(v) for v in args.flow_seeds.split(",")]:
        first = None
        if not args.no_compile:  # compile this shape first; its time is reported apart
            t0 = time.perf_counter()
            flow_run(100, S, dim, True, device=args.device)
            first = time.perf_counter() - t0
        fp = flowjax_peer.FlowPeer(task, shift, scale, S, steps) if with_peer else None
        if fp is not None:
            fp.run()  # compiles
        eager, compiled, peer = [], [], []
        for _ in range(R):  # interleaved (eager, compiled, peer, eager, ...) so all see the same load
            eager.append(flow_run(steps, S, dim, False, device=args.device))
            if first is not None:
                compiled.append(flow_run(steps, S, dim, True, device=args.device))
            if fp is not None:
                peer.append(fp.run())
        e = S * steps / min(w for w, _ in eager)
        c = S * steps / min(w for w, _ in compiled) if compiled else None
        line = f"{S:>5} {e:>9.0f} " + (f"{c:>9.0f}" if c else f"{'-':>9}")
        mass = np.mean([m["final"]["old_mass"] for m in eager[0][1].get("members", [eager[0][1]])])
        comp = f"{first - 100 / steps * min(w for w, _ in compiled):.0f} s" if compiled else "-"
        if fp is not None:
            best = min(w for w, _ in peer)
            pj = S * steps / best
            line += (f" {pj:>9.0f} {max(e, c or 0.0) / pj:>6.2f}x  {comp} | {fp.cold_s - best:.0f} s;  "
                     f"{mass:.4f} | {float(peer[-1][1].mean()):.4f}")
        print(line, flush=True)
    print("ratio: ptforget's best whole-run member-steps/s over flowjax's steady state (target >= 1); compilation:\n"
          "  ptforget's first compile=true run of 100 steps less its steady cost; flowjax's first run less its best")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--n-eval", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", default="32,256", help="comma-separated ensemble sizes")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--peer", default="none", help="none, or the peers to run: jax (GMM), flowjax (flows), both "
                    "comma-separated")
    ap.add_argument("--only", choices=["all", "single", "seeds", "overhead", "flows"], default="all")
    ap.add_argument("--quick", action="store_true", help="the flow section alone, short: under 3 minutes")
    ap.add_argument("--flow-seeds", default="3,32", help="comma-separated member counts of the flow section")
    ap.add_argument("--flow-dim", type=int, default=1, help="task dimension of the flow section")
    ap.add_argument("--flow-steps", type=int, default=600, help="steps per flow run")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile=true runs")
    ap.add_argument("--warm-inductor-cache", action="store_true",
                    help="keep inductor's on-disk cache (default: an empty one, so the compile time is a cold one)")
    args = ap.parse_args()
    peers = {p.strip() for p in args.peer.split(",")} - {"none", ""}
    bad = peers - {"jax", "flowjax"}
    if bad:
        ap.error(f"--peer: unknown peer {sorted(bad)} (allowed: none, jax, flowjax)")
    if args.quick:
        args.only, args.flow_steps, args.repeats, args.no_compile = "flows", 200, 1, True
    if not args.warm_inductor_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
    torch.set_num_threads(1)
    peer = None
    if peers:
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        import jax
        import jax_peer

        pv = f", jax {jax.__version__} ({jax.default_backend()})"
        if "flowjax" in peers:
            import flowjax

            pv += f", flowjax {getattr(flowjax, '__version__', '?')}"
        if args.device == "cuda" and jax.default_backend() != "gpu":
            pv += " - the peer is skipped: this jax has no GPU backend"
        elif "jax" in peers:
            peer = jax_peer
    else:
        pv = ""
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
          f"{pv}, 1 thread, device {args.device}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    kw = dict(steps=args.steps, batch=args.batch, eval_every=args.eval_every, n_eval=args.n_eval)
    task = TwoModeTask(dim=2, delta=4.0)
    R = args.repeats
    if args.only in ("all", "single"):
        lightning_run(**{**kw, "steps": 20}, device=args.device)  # warm-up: imports, first Trainer
        if not args.no_compile:
            t0 = time.perf_counter()
            lightning_run(**{**kw, "steps": 2 * args.eval_every}, device=args.device, compile=True)
            first = time.perf_counter() - t0
        # interleaved (plain, lightning, plain, ...) so both see the same load; best of each, and the spread
        pair = [(plain_loop(**kw, device=args.device), lightning_run(**kw, device=args.device)[1]) for _ in range(R)]
        p, ps = min(x for x, _ in pair), max(x for x, _ in pair) / min(x for x, _ in pair) - 1
        l, ls = min(y for _, y in pair), max(y for _, y in pair) / min(y for _, y in pair) - 1
        print(f"\n1. one run: GMM reverse KL, {args.steps} steps, batch {args.batch}, eval every {args.eval_every} "
              f"with {args.n_eval} samples (best of {R}; spread in brackets)")
        print(f"plain loop            {1e3 * p / args.steps:7.4f} ms/step  [{ps:.0%}]")
        print(f"lightning path        {1e3 * l / args.steps:7.4f} ms/step  [{ls:.0%}]   lightning / plain {l / p:.3f}"
              " (target <= 1.1)")
        if not args.no_compile:
            c, cs = _best(lambda: lightning_run(**kw, device=args.device, compile=True)[1], R)
            n0 = 2 * args.eval_every
            compile_s = first - n0 * c / args.steps
            gain = (l - c) / args.steps
            print(f"compile=true          {1e3 * c / args.steps:7.4f} ms/step  [{cs:.0%}]   (compiled step cached in "
                  f"the process)")
            print(f"compilation: a first {n0}-step run took {first:.1f} s, i.e. ~{compile_s:.1f} s of compiling; "
                  + (f"pays off after ~{compile_s / gain:.0f} steps" if gain > 0 else "never pays off")
                  + f" ({1e3 * gain:.4f} ms saved per step)")
            if gain > 0:  # the compiled step is kept for the process: later runs of the same shapes pay nothing
                print("  compiled once per process and shape: pays off after "
                      + ", ".join(f"~{math.ceil(compile_s / (gain * n))} runs of {n} steps" for n in (400, 2000)))
        if peer is not None:
            r = min((peer.run_peer(task, 1, **kw) for _ in range(R)), key=lambda r: r.steady_s)
            print(f"jax peer              {1e3 * r.steady_s / args.steps:7.4f} ms/step          (jit compile "
                  f"{r.compile_s:.1f} s, excluded)")
            print(f"ratios to the peer: lightning {l / r.steady_s:.2f}x" + (
                "" if args.no_compile else f", compile=true {c / r.steady_s:.2f}x (target <= 3)"))
    if args.only in ("all", "seeds"):
        print(f"\n2./3. batched seeds: GMM reverse KL, {args.steps} steps per run, whole runs (set-up, evaluations, "
              f"summaries included); seed-steps/s (best of {R})")
        head = f"{'S':>5} {'eager':>9} {'compile':>9}"
        if peer is not None:
            head += f" {'jax+jit':>9} {'jax':>9} {'ratio':>7}  final weight / old mass: ptforget | jax"
        print(head)
        lightning_run(**{**kw, "steps": 20}, device=args.device, seeds=2)  # warm-up
        for S in [int(x) for x in args.seeds.split(",")]:
            if not args.no_compile:  # compile this shape first (its time is part 1's subject, not this table's)
                lightning_run(**{**kw, "steps": 2 * args.eval_every}, device=args.device, seeds=S, compile=True)
            runs_e, runs_c, res = [], [], []
            for _ in range(R):  # interleaved (eager, compiled, peer, eager, ...) so all see the same load
                runs_e.append(lightning_run(**kw, device=args.device, seeds=S))
                if not args.no_compile:
                    runs_c.append(lightning_run(**kw, device=args.device, seeds=S, compile=True))
                if peer is not None:
                    res.append(peer.run_peer(task, S, **kw))
            e = S * args.steps / min(r[0] for r in runs_e)
            best_c = S * args.steps / min(r[0] for r in runs_c) if runs_c else None
            line = f"{S:>5} {e:>9.0f} " + (f"{best_c:>9.0f}" if best_c else f"{'-':>9}")
            if peer is not None:
                cold = S * args.steps / min(r.wall_s for r in res)
                warm = S * args.steps / min(r.steady_s for r in res)
                ours = max(e, best_c or 0.0)
                w, m = _finals(runs_e[0][2])
                pw, pm = float(res[0].weight.mean()), float(res[0].old_mass.mean())
                line += (f" {cold:>9.0f} {warm:>9.0f} {ours / warm:>6.2f}x  {w:.4f} / {m:.4f} | {pw:.4f} / {pm:.4f}"
                         f"  (|diff| {abs(w - pw):.4f} / {abs(m - pm):.4f})")
            print(line, flush=True)
        if peer is not None:
            print("ratio: ptforget's best whole-run seed-steps/s over the compiled peer's (target >= 1)")
    if args.only in ("all", "overhead"):
        _overhead(R)
    if args.only in ("all", "flows"):
        _flows(args, "flowjax" in peers and not (args.device == "cuda" and "GPU" in pv))
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
