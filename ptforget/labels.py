"""Human names of metrics and config keys, for axis labels, table headers and legends (``label_of``)."""

from __future__ import annotations

#: metric (trajectory column or summary field) and config key -> what a reader calls it
LABELS: dict[str, str] = {
    "old_mass": "old-region mass",
    "weight": "old-component weight",
    "drift": "old-core drift since the start",
    "region_drift": "old-region mean's distance from p*'s",
    "comp_drift": "old-component drift ||mu_o - mu_o*||",
    "new_error": "new-mode error (region view)",
    "comp_new_error": "new-component error ||mu_n - mu_n*||",
    "comp_bc": "BC(learned old, learned new)",
    "core_pos": "old-core position (along the axis)",
    "kl_q_pstar": "KL(q || p*)",
    "kl_pstar_q": "KL(p* || q)",
    "loss": "training loss",
    "old_mass_deficit": "old-mass deficit vs p* (target - final)",
    "theory_gap": "|measured - predicted| final old-region mass",
    "old_mass_first_minus_last": "old mass lost since the start",
    "old_mass_max_minus_last": "old mass below its peak",
    "target_old_mass": "target old-region mass (p*)",
    "target_weight": "target old weight beta*",
    "wall_time_s": "wall time (s)",
    "steps": "optimizer steps",
    "step": "optimizer step",
    "pretrain_nll": "pretraining NLL",
    "task.delta": "separation Delta (Mahalanobis)",
    "task.beta_star": "target old weight beta*",
    "task.beta0": "initial old weight beta0",
    "task.dim": "dimension d",
    "objective.lam": "replay fraction lambda",
    "objective.batch": "batch size",
    "optimizer.lr": "learning rate",
    "trainer.max_steps": "optimizer steps",
}
#: summary extremes: ``<metric>_<stat>`` -> "<stat> of <metric>"
STATS = {"first": "start", "last": "final", "min": "min over the run", "max": "max over the run"}


def label_of(key: str) -> str:
    """The human name of a metric or config key (``drift_max`` -> "old-mode drift (region view), max over the
    run"); an unknown key is returned as it is."""
    if key in LABELS:
        return LABELS[key]
    base, _, stat = key.rpartition("_")
    if base in LABELS and stat in STATS:
        return f"{LABELS[base]}, {STATS[stat]}"
    return key
