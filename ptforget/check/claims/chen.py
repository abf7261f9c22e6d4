"""Chen et al. (2025)'s two-mode simulation, reproduced in its own loop (``ptforget.chen``)."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from ptforget.check import rules
from ptforget.check.registry import Claim, Row, Section, register
from ptforget.io import write_json


@register
class Chen2025(Claim):
    """Gain and drop at the first iteration with gain >= 0.9: on-policy RL forgets less than SFT."""

    id, title, order = "chen2025", "Chen et al. (2025) two-mode simulation", 20

    def rows(self, ctx, got):
        from ptforget.chen import run_all

        params = OmegaConf.to_container(ctx.compose(["experiment=chen2025"]).chen2025, resolve=True)
        results = run_all(params)
        write_json(ctx.out / "chen2025.json", results)
        lines = ["| run | stop iteration | gain | drop | pi1 | mu1 | mu2 | sigma2 |", "|" + "---|" * 8]
        curves = {}
        for r in results:
            s = r["at_stop"]
            name = f"{r['method']} lr={r['lr']:g}"
            lines.append(f"| {name} | {r['stop']}{'' if r['reached'] else ' (not reached)'} | {s['gain']:.3f} | "
                         f"{s['drop']:.3f} | {s['weight_old']:.3f} | {s['mu_old']:.3f} | {s['mu_new']:.3f} | "
                         f"{s['sigma_new']:.3f} |")
            it = np.array([t["iteration"] for t in r["trajectory"]])
            curves[f"gain, {name}"] = (it, np.array([t["gain"] for t in r["trajectory"]]))
            curves[f"drop, {name}"] = (it, np.array([t["drop"] for t in r["trajectory"]]))
        fkl = next(r for r in results if r["method"] == "fkl" and r["reached"])
        rl = next((r for r in results if r["method"] == "reinforce"), None)
        if rl is not None and rl["reached"]:
            yield Row("On-policy RL forgets less than SFT at equal gain (Chen et al.)", "chen2025", "theory",
                      "Chen's 1-D simulation", "drop(SFT lr 0.15) - drop(RL) at gain >= 0.9",
                      [fkl["at_stop"]["drop"] - rl["at_stop"]["drop"]], rules.at_least(0.0, "SFT drops more than RL"))
        fig = ctx.plots.plot_trajectories(curves, ctx.figure_path("chen2025_gain_drop.png"),
                                          key="overlap accuracy change",
                                          title="Chen et al. two-mode simulation: gain and drop")
        yield Section([fig], ["\n".join(lines)])
