"""Chen et al. (2025)'s two-mode simulations (``ptforget.chen``), both policies, every run over many seeds.

Their claims: with a bi-modal policy on-policy RL forgets less than SFT at equal gain (reverse KL moves only the
new component); with a uni-modal policy both forget, and RL (mode-seeking onto the new mode) forgets more. Chen's
code shares one random stream between runs, so the runs are compared in distribution over independent seeds, with a
rank test (one seed can collapse). These rows are a *replication* of a published simulation, not a test of the
two-mode theory on learned generators.
"""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from ptforget.check import rules
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.io import write_json


@register
class Chen2025(Claim):
    """Drop at the first iteration with gain >= 0.9, per seed, SFT against RL in both settings."""

    id, title, order = "chen2025", "Chen et al. (2025) two-mode simulations", 20

    def rows(self, ctx, got):
        from ptforget.chen import run_all

        params = OmegaConf.to_container(ctx.compose(["experiment=chen2025"]).chen2025, resolve=True)
        params["seeds"] = int(ctx.profile.chen_seeds)
        results = run_all(params)
        write_json(ctx.out / "chen2025.json", [{k: v for k, v in r.items() if k not in ("gain", "drop")}
                                                for r in results])
        lines = ["| setting | run | seeds reaching gain 0.9 | iteration (mean) | gain | drop |", "|" + "---|" * 6]
        curves = {}
        by = {}
        for r in results:
            name = f"{r['method']} lr={r['lr']:g}"
            by[(r["setting"], name)] = r
            lines.append(f"| {r['setting']} | {name} | {int(r['reached'].sum())}/{len(r['stop'])} | "
                         f"{r['stop'].mean():.0f} | {r['gain_at_stop'].mean():.3f} | {r['drop_at_stop'].mean():.3f} |")
            it = np.arange(len(r["gain"]))
            curves[f"{r['setting']}: drop, {name}"] = [(it, r["drop"][:, k]) for k in range(r["drop"].shape[1])]
        sft, rl = by[("bimodal", "fkl lr=0.15")], by[("bimodal", "reinforce lr=0.01")]
        yield Row("Bi-modal policy: on-policy RL forgets less than SFT at equal gain", "chen2025", "replication",
                  "Chen's bi-modal simulation, 200 iterations", "drop(SFT lr 0.15) - drop(RL) at gain >= 0.9",
                  list(sft["drop_at_stop"]), rules.at_least(0.0, "one-sided Mann-Whitney rank test at 5%: one seed "
                                                            "can be an outlier (a collapse), so ranks, not means"),
                  versus=list(rl["drop_at_stop"]), note=_reached(sft, rl), extra={"test": "rank"})
        u_sft, u_rl = by[("unimodal", "fkl lr=0.05")], by[("unimodal", "reinforce lr=0.005")]
        half = 0.5 * u_sft["initial_acc"]["old"]
        for run, label in ((u_sft, "SFT"), (u_rl, "RL")):
            yield Row(f"Uni-modal policy: {label} forgets", "chen2025", "replication",
                      "Chen's uni-modal simulation, 1000 iterations", "drop at gain >= 0.9",
                      list(run["drop_at_stop"]),
                      rules.at_least(half, "forgotten: more than half the old accuracy lost"), note=_reached(run))
        yield Row("Uni-modal policy: RL forgets more than SFT at equal gain", "chen2025", "replication",
                  "Chen's uni-modal simulation, 1000 iterations", "drop(RL) - drop(SFT) at gain >= 0.9",
                  list(u_rl["drop_at_stop"]), rules.at_least(0.0, "one-sided Mann-Whitney rank test at 5%"),
                  versus=list(u_sft["drop_at_stop"]), note=_reached(u_rl, u_sft), extra={"test": "rank"})
        fig = ctx.plots.plot_trajectories(curves, ctx.figure_path("chen2025_drop.png"), key="drop of old accuracy",
                                          title="Chen et al.: drop of the old task's accuracy (mean, 95% band)")
        yield Section([fig], ["\n".join(lines)])


def _reached(*runs) -> str:
    return "; ".join(f"{r['method']} lr={r['lr']:g}: {int(r['reached'].sum())}/{len(r['stop'])} seeds reach "
                     "gain 0.9" for r in runs)
