"""Which family x objective steps ``compile=true`` captures: one short ``seeds=2`` run of each pair with the fused
step traced by dynamo (``--backend eager``: the capture without inductor's code generation, seconds a pair;
``--backend inductor``: the real compilation), printing "compiled" or the reason it ran eagerly.

Usage: python scripts/compile_matrix.py [--families gmm,mdn,flow,realnvp] [--objectives rkl,fkl,...]
       [--backend eager|inductor] [--seeds 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ("gmm", "mdn", "flow", "realnvp")
OBJECTIVES = ("rkl", "fkl", "rkl_replay", "fkl_replay", "sdft", "ttt_discover", "oapl")


def compile_status(family: str, objective: str, seeds: int = 2, backend: str = "eager") -> str:
    """'compiled', or the one line saying why this pair's step ran eagerly."""
    from hydra import compose, initialize_config_module

    from ptforget import fused
    from ptforget.train import run_training

    if backend != "inductor":
        fused.use_backend("cpu", backend)
    overrides = ["logger=none", "quiet=true", "checkpoint_every=0", f"generator={family}", f"objective={objective}",
                 f"seeds={seeds}", "compile=true", "trainer.max_steps=4", "eval_every=2", "n_eval=256"]
    if family != "gmm":
        overrides.append("generator.pretrain.steps=0")
    if family == "flow":
        overrides.append("task.dim=1")
    with initialize_config_module("ptforget.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    records: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "compile=true" in msg:
                records.append(msg)

    handler = Catch()
    logging.getLogger("ptforget").addHandler(handler)
    try:
        with tempfile.TemporaryDirectory() as d:
            summary = run_training(cfg, d)
    finally:
        logging.getLogger("ptforget").removeHandler(handler)
    if records:
        return records[0].split("(", 1)[-1].rstrip(")")
    members = summary.get("members", [summary])
    bad = [m.get("status") for m in members if m.get("status") != "complete"]
    return "compiled" if not bad else f"compiled, but status {bad}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--backend", default="eager", choices=["eager", "aot_eager", "inductor"])
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for fam in args.families.split(","):
        for obj in args.objectives.split(","):
            t0 = time.perf_counter()
            status = compile_status(fam, obj, args.seeds, args.backend)
            print(f"{fam:8s} {obj:13s} {time.perf_counter() - t0:6.1f} s  {status}", flush=True)


if __name__ == "__main__":
    main()
