"""Sweep reports: collect every run under a folder, aggregate over seeds, write tables and figures.

A run is any folder holding a ``summary.json`` (written by ``ptforget-train``). Its settings are the whole
composed config it ran with, defaults filled in (``summary["config"]``, or ``.hydra/config.yaml`` next to the run
or its ensemble folder), and the config-group options it was composed from (``summary["choices"]`` or
``.hydra/hydra.yaml``): ``generator=flow`` and ``generator=realnvp`` are two settings although both build the
class ``Flow``. Runs that only recorded their overrides fall back to them. The *swept keys* are the settings whose
values differ across runs, less those that do not change a result (``study``, ``paths``, ``logger``, ...), the
seeds, and the keys a differing group option already names (``generator.kind`` when ``generator`` differs), so
groups average over seeds and two sweeps of the same config sharing a folder give one row.

Public API::

    collect(root) -> list[dict]                      # one flat row per run
    aggregate(rows, by=None, metrics=None) -> list[dict]   # n, mean, 95% t-interval per metric and group
    write_report(root, out_dir=None, metrics=None, figures=True) -> dict
    main(argv=None) -> int       # ``ptforget-report DIR [metrics=[old_mass,drift_max]] [by=[...]] [out=DIR]``

Every numeric field of a summary is a metric: the final values (``old_mass``), the extremes over the run
(``drift_max``, ``old_mass_min``, ``comp_drift_first``), forgetting (``old_mass_deficit`` = the target's old-region
mass minus the final one: forgetting measured against p*, not against where the run started), the target
(``target_old_mass``), pretraining statistics and the wall time. Aggregates use only runs whose status is
``complete``; diverged, failed and interrupted runs are counted (``n_runs`` vs ``n``) and listed in their own
section of ``summary.md``. Non-finite metric values are skipped per metric, so ``<metric>_n`` can be smaller than
``n``. The figures follow the experiment (``experiment=drift_vs_separation``: the sup drift against Delta).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from ptforget.io import atomic_write_text
from ptforget.io import read_trajectory as read_trajectory_columns
from ptforget.stats import clipped_ci

# Columns taken from summary.json as they are (the metric columns come from "final", "extremes", "forgetting",
# "target" and "pretrain"); the summary's class names go to generator_class / objective_name, since "generator"
# and "objective" are the group options the user chose.
META_KEYS = ("status", "reason", "diverged_step", "seed", "steps", "max_steps", "wall_time_s", "config_hash")
# Preferred order of metric columns; others follow alphabetically.
METRIC_ORDER = ("old_mass", "weight", "drift", "region_drift", "new_error", "comp_drift", "comp_new_error", "comp_bc",
                "kl_q_pstar", "kl_pstar_q", "old_mass_deficit", "old_mass_first_minus_last",
                "old_mass_max_minus_last", "target_old_mass")
# Metrics shown in summary.md and on stdout unless metrics=[...] says otherwise.
DEFAULT_TABLE_METRICS = ("old_mass", "weight", "drift", "new_error", "old_mass_deficit")
#: never grouping keys: the seeds (groups average over them)
NEVER_GROUP = ("seed", "seeds")
#: settings that do not change a run's result (ptforget.train.NON_RESULT_KEYS, and these leaves anywhere)
NOT_SETTINGS = ("paths", "logger", "hydra", "quiet", "study", "checkpoint_every", "limits", "wandb_mode", "tags",
                "task_name", "optimized_metric")
NOT_SETTING_LEAVES = ("cache_dir", "enable_progress_bar")
#: config groups whose option names a block of keys anywhere in the config (a global package)
GLOBAL_GROUPS = ("experiment",)
BAD_STATUSES = ("diverged", "failed", "interrupted")
EXTREMES = ("first", "last", "min", "max")
#: what each experiment's report shows: the x key of its figures, the metrics drawn against it (log y or not),
#: the table's metrics and the trajectories drawn
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "drift_vs_separation": {"x": "task.delta", "metrics": ("comp_drift_max", "drift_max"), "logy": True,
                            "table": ("comp_drift_max", "drift_max", "old_mass", "weight"),
                            "trajectories": ("comp_drift",)},
    "mass_forgetting": {"x": "task.delta", "metrics": ("old_mass", "old_mass_deficit"), "logy": False,
                        "table": ("old_mass", "weight", "old_mass_deficit", "drift"), "trajectories": ("old_mass",)},
    "replay_sweep": {"x": "objective.lam", "metrics": ("weight", "old_mass"), "logy": False,
                     "table": ("weight", "old_mass", "old_mass_deficit", "new_error"), "trajectories": ("old_mass",)},
    "methods_compare": {"x": None, "metrics": (), "logy": False,
                        "table": ("old_mass", "old_mass_deficit", "new_error", "drift"),
                        "trajectories": ("old_mass", "new_error")},
}


# --------------------------------------------------------------------------------------------------------------
# Collecting runs
# --------------------------------------------------------------------------------------------------------------


def _to_float(v: Any) -> float:
    """JSON metric value to float: null -> nan, "inf"/"-inf"/"nan" strings -> the float."""
    if v is None:
        return math.nan
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return math.nan


_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)$", re.IGNORECASE)


def parse_value(text: str) -> Any:
    """Hydra override value to a Python scalar (int, float, bool, None) or the string itself."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    low = s.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if low == "null":
        return None
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s):
        return float(s)
    return s


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["task.delta=6", "+x=1", "~y"]`` -> ``{"task.delta": 6, "x": 1}`` (deletions are dropped)."""
    out: dict[str, Any] = {}
    for item in overrides or ():
        item = str(item).strip()
        if not item or item.startswith("~") or "=" not in item:
            continue
        key, value = item.split("=", 1)
        key = key.lstrip("+").strip()
        if key.startswith("hydra."):
            continue
        out[key] = parse_value(value)
    return out


def _read_overrides_yaml(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    try:
        import yaml

        data = yaml.safe_load(text)
        if isinstance(data, list):
            return [str(x) for x in data]
    except Exception:  # fall through to a line parser
        pass
    return [ln.strip()[2:].strip() for ln in text.splitlines() if ln.strip().startswith("- ")]


def _natural_key(path: Path) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def find_summaries(root: str | Path) -> list[Path]:
    """Every ``summary.json`` under ``root`` (recursively), in natural path order (2 before 10)."""
    root = Path(root)
    if root.is_file() and root.name == "summary.json":
        return [root]
    return sorted(root.rglob("summary.json"), key=lambda p: _natural_key(p.relative_to(root)))


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None


def _hydra_dir(run_dir: Path) -> Path | None:
    """The ``.hydra`` folder of a run: its own, or its ensemble's (a member lives in ``<run>/seed<k>/``)."""
    for d in (run_dir, run_dir.parent):
        if (d / ".hydra").is_dir():
            return d / ".hydra"
    return None


def run_settings(summary: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the composed config the run used, with its defaults; the group options chosen), each from the summary or
    else from Hydra's files next to the run (None / {} when neither has them)."""
    config, choices = summary.get("config"), summary.get("choices")
    hydra = _hydra_dir(run_dir) if not (isinstance(config, dict) and isinstance(choices, dict)) else None
    if not isinstance(config, dict) and hydra is not None:
        loaded = _load_yaml(hydra / "config.yaml")
        config = loaded if isinstance(loaded, dict) else None
    if not isinstance(choices, dict):
        choices = {}
        loaded = _load_yaml(hydra / "hydra.yaml") if hydra is not None else None
        got = (((loaded or {}).get("hydra") or {}).get("runtime") or {}).get("choices") if isinstance(
            loaded, dict) else None
        if isinstance(got, dict):
            choices = {str(k): v for k, v in got.items() if not str(k).startswith("hydra/")}
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "hydra"}
    return config, choices


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of a nested mapping (lists are values): ``{"task": {"delta": 4}}`` -> ``{"task.delta": 4}``."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Every numeric field of a summary under its report name (see the module docstring)."""
    metrics: dict[str, float] = {}
    for key, value in (summary.get("final") or {}).items():
        metrics[key] = _to_float(value)
    for key, ext in (summary.get("extremes") or {}).items():
        if isinstance(ext, dict):
            for stat in EXTREMES:
                if stat in ext:
                    metrics[f"{key}_{stat}"] = _to_float(ext[stat])
    for key, value in (summary.get("forgetting") or {}).items():
        metrics[key] = _to_float(value)
    for key, value in (summary.get("target") or {}).items():
        metrics[f"target_{key}"] = _to_float(value)
    for key, value in (summary.get("pretrain") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[key] = _to_float(value)
    for key in ("wall_time_s", "steps"):
        if isinstance(summary.get(key), int | float) and not isinstance(summary.get(key), bool):
            metrics[key] = _to_float(summary[key])
    return metrics


def _target_old_mass(config: dict[str, Any]) -> float | None:
    """p*'s old-region mass for a run's task config (runs written before summaries recorded their target)."""
    try:
        from ptforget.metrics import target_region_stats
        from ptforget.tasks import TwoModeTask

        task = {k: v for k, v in (config.get("task") or {}).items() if not str(k).startswith("_")}
        return float(target_region_stats(TwoModeTask(**task))[0])
    except Exception:
        return None


def _row_from_summary(summary: dict[str, Any], run_dir: Path, root: Path) -> dict[str, Any]:
    overrides = summary.get("overrides")
    if overrides is None:
        ov_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = _read_overrides_yaml(ov_file) if ov_file.is_file() else []
    config, choices = run_settings(summary, run_dir)
    chosen = {g: o for g, o in choices.items() if g not in NOT_SETTINGS}
    # the group options first, then every setting with its default (or, without a config, the overrides)
    params: dict[str, Any] = dict(chosen)
    if config is not None:
        params.update(flatten(config))
    else:
        params.update(parse_overrides(overrides))
    try:
        rel = run_dir.relative_to(root).as_posix() or "."
    except ValueError:
        rel = run_dir.as_posix()
    row: dict[str, Any] = {"run": rel}
    row.update(params)
    for key in META_KEYS:
        if key in summary:
            row[key] = summary[key]
    if summary.get("undefined"):  # why a metric is NaN (an empty old core): said, not averaged
        row["undefined"] = "; ".join(f"{k}: {v}" for k, v in summary["undefined"].items())
    if "generator" in summary:
        row["generator_class"] = summary["generator"]
        row.setdefault("generator", summary["generator"])  # no recorded choice: the class name, as before
    if "objective" in summary:
        row["objective_name"] = summary["objective"]
        row.setdefault("objective", summary["objective"])
    metrics = summary_metrics(summary)
    metrics.update(_theory_gap_metric(run_dir))
    if "target_old_mass" not in metrics and config is not None and "old_mass" in metrics:
        target = _target_old_mass(config)
        if target is not None:
            metrics["target_old_mass"] = target
            metrics["old_mass_deficit"] = target - metrics["old_mass"]
    row.update(metrics)
    row["_dir"] = str(run_dir)
    row["_override_keys"] = list(params)
    row["_choice_keys"] = list(chosen)
    row["_metric_keys"] = list(metrics)
    return row


def _theory_gap_metric(run_dir: Path) -> dict[str, float]:
    """``theory_gap`` of a run of the theory-gap search (its ``theory_gap.json``, beside an ensemble's members)."""
    for d in (run_dir, run_dir.parent):
        try:
            return {"theory_gap": _to_float(json.loads((d / "theory_gap.json").read_text())["theory_gap"])}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {}


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One flat row per run found under ``root``.

    Columns: ``run`` (path relative to root), each override key (``task.delta``, ``objective``, ...), the
    summary's status/reason/diverged_step/seed/generator/objective/steps/max_steps/wall_time_s/config_hash, and
    every ``final`` and ``forgetting`` metric under its own name (``old_mass``, ``old_mass_max_minus_last``, ...).
    Private bookkeeping keys start with ``_`` (``_dir``, ``_override_keys``, ``_metric_keys``) and are not
    written to CSV. An unreadable summary.json becomes a row with status ``unreadable`` and the error as reason.
    """
    root = Path(root)
    base = root if root.is_dir() else root.parent
    rows = []
    for path in find_summaries(root):
        try:
            rows.append(_row_from_summary(read_summary(path), path.parent, base))
            problem = trajectory_problem(path.parent)
            if problem is not None:
                raise ValueError(problem)
        except (OSError, ValueError) as err:
            rel = path.parent.relative_to(base).as_posix() if path.parent.is_relative_to(base) else str(path.parent)
            if rows and rows[-1].get("_dir") == str(path.parent):
                rows.pop()
            rows.append({"run": rel or ".", "status": "unreadable", "reason": f"{type(err).__name__}: {err}",
                         "_dir": str(path.parent), "_override_keys": [], "_metric_keys": []})
    return rows


def read_summary(path: Path) -> dict[str, Any]:
    """A summary.json, checked for the shape the report reads (ValueError naming what is wrong otherwise)."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"summary.json is not text ({err.reason})") from None
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")
    for key in ("final", "forgetting"):
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            raise ValueError(f"summary.json: {key!r} is a {type(summary[key]).__name__}, not an object")
    ov = summary.get("overrides")
    if ov is not None and not (isinstance(ov, list) and all(isinstance(o, str) for o in ov)):
        raise ValueError("summary.json: 'overrides' is not a list of strings")
    return summary


def trajectory_problem(run_dir: Path) -> str | None:
    """Why ``run_dir/trajectory.csv`` cannot be read as a CSV of numbers (None when it can, or is absent)."""
    path = Path(run_dir) / "trajectory.csv"
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                return "trajectory.csv is empty (the run wrote no evaluation)"
            n = 0
            for row in reader:
                if len(row) > len(header):
                    return "trajectory.csv: a row longer than its header"
                n += 1
            if n == 0:
                return "trajectory.csv has a header and no rows (the run wrote no evaluation)"
    except UnicodeDecodeError as err:
        return f"trajectory.csv is not text ({err.reason})"
    except (OSError, csv.Error) as err:
        return f"trajectory.csv: {err}"
    return None


def dedupe(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows with each run counted once, the duplicates left out): two folders holding the same run (same config
    hash, seed and recorded settings: a sweep launched twice into one study) are one seed, not two. Of a run's
    copies the first complete one is kept (else the first); each left-out row gets ``duplicate_of`` (the kept
    row's ``run``)."""
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = _run_key(r)
        if key[0] is None or r.get("status") == "unreadable":
            continue
        first = kept.get(key)
        if first is None or (first.get("status", "complete") != "complete"
                             and r.get("status", "complete") == "complete"):
            kept[key] = r
    keep_ids = {id(r) for r in kept.values()}
    unique, dups = [], []
    for r in rows:
        key = _run_key(r)
        if id(r) in keep_ids or key not in kept:
            unique.append(r)
        else:
            dups.append({**r, "duplicate_of": kept[key]["run"]})
    return unique, dups


def _run_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two rows the same run: the config hash, the seed and every recorded setting."""
    settings = tuple(sorted((k, _hashable(row.get(k))) for k in row.get("_override_keys", ()) if is_setting(k)))
    return row.get("config_hash"), row.get("seed"), settings


def duplicates_markdown(dups: Sequence[dict[str, Any]]) -> str:
    """Markdown section naming the runs counted once because another folder holds the same run ('' if none)."""
    if not dups:
        return ""
    lines = [f"## Duplicate runs counted once ({len(dups)})", "",
             "Same config hash and seed as an earlier folder: one run, not an extra seed.", "",
             "| run | same run as | seed | config_hash |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(_md_escape(_fmt(r.get(k))) for k in ("run", "duplicate_of", "seed", "config_hash"))
              + " |" for r in dups]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Aggregating
# --------------------------------------------------------------------------------------------------------------


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


def _sort_key(v: Any) -> tuple:
    if v is None:
        return (0, 0.0, "")
    if isinstance(v, bool):
        return (1, float(v), "")
    if isinstance(v, int | float):
        return (2, float(v) if not math.isnan(v) else math.inf, "")
    return (3, 0.0, str(v))


def is_setting(key: str) -> bool:
    """Whether a config key can tell two results apart (not the seeds, folders, loggers, study, ...)."""
    parts = key.split(".")
    return parts[0] not in NEVER_GROUP and parts[0] not in NOT_SETTINGS and parts[-1] not in NOT_SETTING_LEAVES


def _determined_by(rows: Sequence[dict[str, Any]], key: str, choice: str) -> bool:
    """Whether ``key`` takes one value for each option of ``choice`` (the option already tells the runs apart)."""
    seen: dict[Any, Any] = {}
    for r in rows:
        c, v = _hashable(r.get(choice)), _hashable(r.get(key))
        if seen.setdefault(c, v) != v:
            return False
    return True


def swept_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Settings whose values vary across ``rows`` (a key missing from some runs counts as varying), in first-seen
    order: not the seeds nor the keys that do not change a result (``is_setting``), and not a key under a group
    whose chosen option varies and determines it (``generator.kind`` when ``generator`` is flow or realnvp)."""
    keys: list[str] = []
    explicit = any("_override_keys" in r for r in rows)
    for r in rows:
        if explicit:
            cand = r.get("_override_keys", [])
        else:  # rows from elsewhere (e.g. read back from runs.csv): every non-meta, non-metric column
            cand = [k for k in r if not k.startswith("_") and k not in META_KEYS and k != "run"
                    and k not in METRIC_ORDER and k not in ("generator_class", "objective_name")]
        keys += [k for k in cand if k not in keys]
    varying = [k for k in keys if is_setting(k) and len({_hashable(r.get(k)) for r in rows}) > 1]
    choices = [k for k in varying if any(k in r.get("_choice_keys", ()) for r in rows)]
    out = []
    for k in varying:
        if k not in choices and any((k.startswith(c + ".") or c in GLOBAL_GROUPS) and _determined_by(rows, k, c)
                                    for c in choices):
            continue
        out.append(k)
    return out


def metric_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Metric columns present in ``rows``: preferred order first (METRIC_ORDER), the rest sorted."""
    present: set[str] = set()
    for r in rows:
        present.update(r.get("_metric_keys", [k for k in r if k in METRIC_ORDER]))
    return [k for k in METRIC_ORDER if k in present] + sorted(present - set(METRIC_ORDER))


def group_rows(rows: Sequence[dict[str, Any]], by: Sequence[str]) -> list[tuple[dict[str, Any], list[dict]]]:
    """Rows grouped by the values of ``by``: list of (group-values dict, rows), sorted by the values."""
    groups: dict[tuple, tuple[dict[str, Any], list[dict]]] = {}
    for r in rows:
        vals = {k: r.get(k) for k in by}
        key = tuple(_hashable(vals[k]) for k in by)
        groups.setdefault(key, (vals, []))[1].append(r)
    order = sorted(groups, key=lambda key: tuple(_sort_key(v) for v in key))
    return [groups[k] for k in order]


def aggregate(rows: Sequence[dict[str, Any]], by: Sequence[str] | None = None,
              metrics: Sequence[str] | None = None, level: float = 0.95,
              statuses: Sequence[str] = ("complete",)) -> list[dict[str, Any]]:
    """Group ``rows`` and summarise each metric over the runs of each group.

    ``by``: grouping columns; ``None`` auto-detects the swept keys (:func:`swept_keys`; never ``seed``), ``[]``
    puts everything in one group. ``metrics``: metric columns (default: all found). Only runs whose status is in
    ``statuses`` enter the statistics.

    Each output row holds the group values, ``n_runs`` (all runs in the group), ``n`` (runs used), ``n_bad`` (runs
    left out) and, per metric ``m``: ``m_n``, ``m_mean``, ``m_std``, ``m_ci`` (half-width of the ``level`` t-interval,
    NaN when fewer than two finite values), ``m_lo`` and ``m_hi`` (the interval clipped to the metric's range,
    ``ptforget.stats.metric_range``: a mass's band never goes below 0).
    """
    by = list(swept_keys(rows) if by is None else by)
    metrics = list(metric_keys(rows) if metrics is None else metrics)
    out = []
    for vals, members in group_rows(rows, by):
        used = [r for r in members if r.get("status", "complete") in statuses]
        agg: dict[str, Any] = dict(vals)
        agg["n_runs"] = len(members)
        agg["n"] = len(used)
        agg["n_bad"] = len(members) - len(used)
        for m in metrics:
            st = clipped_ci((r.get(m) for r in used), m, level=level)
            for stat in ("n", "mean", "std", "ci", "lo", "hi"):
                agg[f"{m}_{stat}"] = st[stat]
        out.append(agg)
    return out


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}g}"
    return str(v)


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if not k.startswith("_") and k not in columns]
    buf = StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in columns])
    return buf.getvalue()


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown_table(agg: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> str:
    """Markdown table: one line per group, ``mean ± ci`` per metric (just the mean when n < 2)."""
    head = [*by, "n", *metrics]
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "|".join("---" if i < len(by) else "---:" for i in range(len(head))) + "|"]
    from ptforget.terminal import row_cells

    for a in agg:
        lines.append("| " + " | ".join(_md_escape(c) for c in row_cells(a, by, metrics)) + " |")
    return "\n".join(lines) + "\n"


def bad_runs_markdown(rows: Sequence[dict[str, Any]], by: Sequence[str]) -> str:
    """Markdown section listing runs whose status is not ``complete`` (empty string when there are none)."""
    bad = [r for r in rows if r.get("status", "complete") != "complete"]
    if not bad:
        return ""
    head = ["run", "status", *by, "seed", "diverged_step", "reason"]
    lines = [f"## Diverged / failed runs ({len(bad)})", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in bad:
        lines.append("| " + " | ".join(_md_escape(_fmt(r.get(k))) for k in head) + " |")
    return "\n".join(lines) + "\n"


def read_trajectory(run_dir: str | Path, key: str = "old_mass") -> tuple[list[float], list[float]] | None:
    """(steps, values) of column ``key`` in ``run_dir/trajectory.csv`` (non-finite entries dropped); ``None`` if
    the file or column is missing."""
    path = Path(run_dir) / "trajectory.csv"
    if not path.is_file() or trajectory_problem(run_dir) is not None:
        return None
    cols = read_trajectory_columns(path)
    if key not in cols or "step" not in cols:
        return None
    keep = [i for i, (s, v) in enumerate(zip(cols["step"], cols[key], strict=True))
            if math.isfinite(s) and math.isfinite(v)]
    return [float(cols["step"][i]) for i in keep], [float(cols[key][i]) for i in keep]

def _label(vals: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in vals.items()) or "all runs"


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", s).strip("_") or "x"


def _is_numeric_key(rows: Sequence[dict[str, Any]], key: str) -> bool:
    vals = [r.get(key) for r in rows]
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals) and len(set(vals)) > 1


def experiment_of(rows: Sequence[dict[str, Any]]) -> str | None:
    """The experiment every run was launched with (``experiment=...``), when they share one."""
    names = {r.get("experiment") for r in rows if r.get("status", "complete") != "unreadable"}
    if len(names) == 1:
        name = names.pop()
        return str(name) if name else None
    return None


def trajectory_column(metric: str) -> str:
    """The trajectory column a metric comes from (``drift_max`` -> ``drift``)."""
    for stat in EXTREMES:
        if metric.endswith(f"_{stat}"):
            return metric[: -len(stat) - 1]
    return metric


def _figures(rows: list[dict[str, Any]], agg: list[dict[str, Any]], by: list[str], out_dir: Path,
             metrics: Sequence[str] = ("old_mass",), trajectories: Sequence[str] = ("old_mass",),
             x_key: str | None = None, logy: bool = False, max_lines: int = 10,
             predicted: dict[int, Any] | None = None) -> list[Path]:
    """Each metric against each numeric swept key (or only ``x_key``), one line per combination of the other swept
    keys (mean and 95% CI), and the trajectories of ``trajectories`` (mean and 95% band over seeds per group).
    ``predicted`` (``theory_columns``): each line's prediction drawn dashed in its colour."""
    from ptforget import plots

    figs: list[Path] = []
    good = [r for r in rows if r.get("status", "complete") == "complete"]
    keys = [k for k in by if _is_numeric_key(good, k) and (x_key is None or k == x_key)]
    for metric in metrics:
        if not any(a.get(f"{metric}_n", 0) for a in agg):
            continue
        for key in keys:
            others = [k for k in by if k != key]
            series: dict[str, tuple[list, list, list, list]] = {}
            pred_series: dict[str, tuple[list, list]] = {}
            colours: dict[str, str] = {}
            for a in sorted(agg, key=lambda a: _sort_key(a.get(key))):
                if a.get(f"{metric}_n", 0) == 0:
                    continue
                lab = _label({k: a.get(k) for k in others}) if others else plots.label_of(metric)
                xs, ms, lo, hi = series.setdefault(lab, ([], [], [], []))
                if a.get("objective") is not None:  # one colour per objective in every figure
                    colours[lab] = str(a["objective"])
                xs.append(a[key])
                ms.append(a[f"{metric}_mean"])
                lo.append(a[f"{metric}_lo"])
                hi.append(a[f"{metric}_hi"])
                value = a.get(f"predicted_{metric}")
                if predicted and isinstance(value, float) and math.isfinite(value):
                    px, py = pred_series.setdefault(lab, ([], []))
                    px.append(a[key])
                    py.append(value)
            if series:
                figs.append(plots.plot_metric_vs_param(
                    series, out_dir / f"final_{_safe_name(metric)}_vs_{_safe_name(key)}.png",
                    xlabel=plots.label_of(key), ylabel=plots.label_of(metric), logy=logy,
                    title=f"{plots.label_of(metric)} vs {plots.label_of(key)}\n(mean, 95% CI over seeds"
                          + ("; dashed: theory)" if pred_series else ")"), predicted=pred_series or None,
                    colours=colours))
    for column in dict.fromkeys(trajectories):
        figs += _trajectory_figures(good, by, out_dir, column, max_lines)
    return figs


def _trajectory_figures(good: list[dict[str, Any]], by: list[str], out_dir: Path, column: str,
                        max_lines: int) -> list[Path]:
    from ptforget import plots

    curves: dict[str, list[tuple[list[float], list[float]]]] = {}
    colours: dict[str, str] = {}
    for vals, members in group_rows(good, by):
        trajs = [t for t in (read_trajectory(r["_dir"], column) for r in members if "_dir" in r) if t and t[0]]
        if trajs:
            curves[_label(vals)] = trajs
            if members[0].get("objective") is not None:
                colours[_label(vals)] = str(members[0]["objective"])
    if not curves:
        return []
    if len(curves) <= max_lines or not by:
        chunks = {"": curves}
    else:  # one figure per value of the first swept key
        chunks = {}
        for vals, _members in group_rows(good, by):
            lab = _label(vals)
            if lab in curves:
                chunks.setdefault(f"_{_safe_name(f'{by[0]}={_fmt(vals[by[0]])}')}", {})[lab] = curves[lab]
    return [plots.plot_trajectories(cs, out_dir / f"trajectories_{_safe_name(column)}{suffix}.png", key=column,
                                    title=f"{plots.label_of(column)} over training (mean, 95% band over seeds)",
                                    colours=colours)
            for suffix, cs in chunks.items()]


def write_report(root: str | Path, out_dir: str | Path | None = None, metrics: Sequence[str] | None = None,
                 figures: bool = True, by: Sequence[str] | None = None, theory: bool = False) -> dict[str, Any]:
    """Collect the runs under ``root`` and write the report into ``out_dir`` (default: ``root/report``).

    Writes (each atomically): ``runs.csv`` (one row per run, every setting and metric), ``summary.csv`` (per group:
    n and mean/std/CI of every metric), ``summary.md`` (markdown table of ``metrics``, mean ± 95% CI, plus a section
    listing non-complete runs) and, with ``figures``, each table metric against each numeric swept key
    (``final_<metric>_vs_<key>.png``) and its trajectories (``trajectories_<column>*.png``); an experiment chooses
    its own (``EXPERIMENTS``). ``metrics`` chooses the columns of the table and the figures (default: the
    experiment's, or DEFAULT_TABLE_METRICS that are present). Returns a dict with rows, aggregate, by, metrics,
    markdown, experiment and the written paths (runs_csv, summary_csv, summary_md, figures). With ``theory`` each
    group also gets the theory's prediction for its exact config (``theory_columns``): ``predicted_<metric>``
    columns in summary.csv and the table, and dashed predicted lines in the figures. Raises
    FileNotFoundError if no run is found and ReportError (before anything is written) when ``metrics`` or ``by``
    name what the runs lack.
    """
    root = Path(root)
    rows, dups = dedupe(collect(root))
    if not rows:
        raise FileNotFoundError(f"no summary.json under {root}")
    validate_options(rows, metrics, by)
    out = Path(out_dir) if out_dir is not None else (root / "report")
    out.mkdir(parents=True, exist_ok=True)
    by = list(swept_keys(rows) if by is None else by)
    all_metrics = metric_keys(rows)
    experiment = experiment_of(rows)
    preset = EXPERIMENTS.get(experiment or "", {})
    if metrics is None:
        table_metrics = [m for m in preset.get("table", DEFAULT_TABLE_METRICS) if m in all_metrics] or [
            m for m in DEFAULT_TABLE_METRICS if m in all_metrics] or all_metrics[:5]
        fig_metrics = [m for m in preset.get("metrics", ("old_mass",)) if m in all_metrics]
        trajectories = list(preset.get("trajectories", ("old_mass",)))
    else:
        table_metrics = fig_metrics = list(metrics)
        trajectories = [trajectory_column(m) for m in metrics]
    agg_metrics = all_metrics + [m for m in table_metrics if m not in all_metrics]
    agg = aggregate(rows, by=by, metrics=agg_metrics)
    predicted = theory_columns(rows, agg, by) if theory else {}

    runs_csv, summary_csv, summary_md = out / "runs.csv", out / "summary.csv", out / "summary.md"
    atomic_write_text(runs_csv, _csv_text(rows))
    atomic_write_text(summary_csv, _csv_text(agg))
    n_bad = sum(r.get("status", "complete") != "complete" for r in rows)
    table = markdown_table(agg, by, table_metrics)
    if theory:
        table = theory_table(agg, by, table_metrics)
    from ptforget.labels import label_of

    legend = "; ".join(f"`{m}`: {label_of(m)}" for m in table_metrics if label_of(m) != m)
    md = [f"# ptforget report: {root}", "",
          f"{len(rows)} runs ({len(rows) - n_bad} complete, {n_bad} not), {len(agg)} groups; "
          f"swept keys: {', '.join(by) if by else '(none)'}"
          + (f"; experiment: {experiment}" if experiment else "") + ". Cells: mean ± 95% t-interval half-width "
          "over complete runs (seeds)." + (f" Columns: {legend}." if legend else ""), "", table]
    bad = bad_runs_markdown(rows, by)
    if bad:
        md += ["", bad]
    if dups:
        md += ["", duplicates_markdown(dups)]
    figs: list[Path] = []
    if figures:
        figs = _figures(rows, agg, by, out, metrics=fig_metrics, trajectories=trajectories,
                        x_key=preset.get("x"), logy=bool(preset.get("logy")), predicted=predicted)
        if theory:
            figs += theory_figures(rows, agg, by, out, predicted)
        figs += search_figures(rows, out)
        if figs:
            md += ["", "## Figures", "", *[f"![{p.stem}]({p.name})" for p in figs]]
    markdown = "\n".join(md).rstrip("\n") + "\n"
    atomic_write_text(summary_md, markdown)
    return {"rows": rows, "aggregate": agg, "by": by, "metrics": table_metrics, "table": table,
            "markdown": markdown, "runs_csv": runs_csv, "summary_csv": summary_csv, "summary_md": summary_md,
            "figures": figs, "experiment": experiment, "predicted": predicted, "duplicates": dups}


# --------------------------------------------------------------------------------------------------------------
# The theory beside the runs (theory=true)
# --------------------------------------------------------------------------------------------------------------


def _group_config(members: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The composed config of a group's runs (its first complete run's), read back from its summary."""
    for r in members:
        if r.get("status", "complete") != "complete" or "_dir" not in r:
            continue
        run_dir = Path(r["_dir"])
        try:
            config, _ = run_settings(read_summary(run_dir / "summary.json"), run_dir)
        except (OSError, ValueError):
            continue
        if config is not None:
            return config
    return None


def theory_columns(rows: Sequence[dict[str, Any]], agg: list[dict[str, Any]],
                   by: Sequence[str]) -> dict[int, Any]:
    """Add the theory's prediction for each group's exact config to its aggregate row (``predicted_old_mass``,
    ``predicted_weight``, ``predicted_drift``, ``theory_basis``, ``theory_note``: ``ptforget.predict``); return
    {index in ``agg``: RunPrediction} for the figures. Groups with the same config but for the seed share one
    computation."""
    from ptforget.predict import no_prediction, predict_config

    cache: dict[str, Any] = {}
    out: dict[int, Any] = {}
    for i, ((_vals, members), a) in enumerate(zip(group_rows(rows, by), agg, strict=True)):
        config = _group_config(members)
        if config is None:
            pred = no_prediction("no complete run with a recorded config")
        else:
            key = json.dumps({k: v for k, v in config.items() if k not in ("seed", "seeds")}, sort_keys=True,
                             default=str)
            if key not in cache:
                cache[key] = predict_config(config)
            pred = cache[key]
        a.update(pred.columns())
        out[i] = pred
    return out


def theory_table(agg: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> str:
    """The summary table with the theory's value after each predicted metric and the basis of the prediction."""
    from ptforget.predict import PREDICTED
    from ptforget.terminal import row_cells

    head = [*by, "n"]
    for m in metrics:
        head += [m, f"{m} (theory)"] if m in PREDICTED else [m]
    head.append("theory basis")
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "|".join("---" if i < len(by) or i == len(head) - 1 else "---:" for i in range(len(head))) + "|"]
    for a in agg:
        cells = row_cells(a, by, [])
        for m in metrics:
            cells += row_cells(a, [], [m])[1:]
            if m in PREDICTED:
                v = a.get(f"predicted_{m}")
                cells.append(_fmt(v) if isinstance(v, float) and math.isfinite(v) else "–")
        basis = str(a.get("theory_basis", ""))
        cells.append(f"{basis}: {a.get('theory_note', '')}" if a.get("theory_note") else basis)
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def search_figures(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``theory_gap_search.png`` for a theory-gap search (runs that report ``theory_gap``): the gap against the
    separation, beta* and the step size, one colour per generator, the largest gap ringed."""
    from ptforget import plots

    good = [r for r in rows if r.get("status", "complete") == "complete" and "theory_gap" in r]
    xs = [k for k in ("task.delta", "task.beta_star", "optimizer.lr", "objective.batch") if
          len({r.get(k) for r in good}) > 1]
    if len(good) < 2 or not xs:
        return []
    return [plots.plot_search(good, out_dir / "theory_gap_search.png", xs, "theory_gap", colour="generator",
                              logx=("optimizer.lr", "objective.batch"),
                              title=f"theory-gap search: |measured - predicted| final old-region mass, "
                                    f"{len(good)} trials")]


def theory_figures(rows: Sequence[dict[str, Any]], agg: Sequence[dict[str, Any]], by: Sequence[str], out_dir: Path,
                   predicted: dict[int, Any]) -> list[Path]:
    """``theory_<metric>.png`` per predicted metric the runs record: one panel per generator, one colour per
    objective (the other swept keys by line style), the runs' mean and 95% band over seeds and the theory's
    prediction for the same config dashed in the same colour."""
    from ptforget import plots
    from ptforget.predict import PREDICTED

    good = [r for r in rows if r.get("status", "complete") == "complete"]
    others = [k for k in by if k not in ("generator", "objective")]
    figs: list[Path] = []
    for metric in PREDICTED:
        panels: dict[str, dict[str, Any]] = {}
        for vals, members in group_rows(good, by):
            trajs = [t for t in (read_trajectory(r["_dir"], metric) for r in members if "_dir" in r) if t and t[0]]
            if not trajs:
                continue
            facet = str(members[0].get("generator", "all"))
            colour = str(members[0].get("objective", ""))
            style = _label({k: vals[k] for k in others}) if others else ""
            idx = next((j for j, a in enumerate(agg) if all(_hashable(a.get(k)) == _hashable(vals[k]) for k in by)),
                       None)
            pred = predicted.get(idx) if idx is not None else None
            curve = (pred.steps, pred.curves[metric]) if pred is not None and metric in pred.curves else None
            final = pred.final.get(metric) if pred is not None else None
            panels.setdefault(facet, {})[(colour, style)] = {"runs": trajs, "theory": curve, "final": final}
        if panels:
            figs.append(plots.plot_facets(panels, out_dir / f"theory_{metric}.png", key=metric,
                                          title=f"{plots.label_of(metric)}: runs (mean, 95% band over seeds) and "
                                                "the theory (dashed)"))
    return figs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ptforget-report",
        description="Aggregate ptforget runs (every summary.json under DIR) over seeds: a table of mean ± 95%% CI "
                    "per group of settings, runs.csv / summary.csv / summary.md and figures in DIR/report.",
        epilog="Options may also be written key=value, as for the other ptforget commands: "
               "metrics=[old_mass,drift_max] by=[objective,task.delta] out=DIR figures=false theory=true. "
               "Metrics: every "
               "numeric summary field (final values such as old_mass; extremes such as drift_max, old_mass_min; "
               "old_mass_deficit = the target's old mass minus the final one; wall_time_s; ...).")
    p.add_argument("dir", metavar="DIR", help="folder holding run directories (searched recursively)")
    p.add_argument("--out", default=None, help="output folder (default: DIR/report)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated metrics for the table and figures (default: the experiment's, else "
                        f"{','.join(DEFAULT_TABLE_METRICS)})")
    p.add_argument("--by", default=None, help="comma-separated grouping keys (default: the swept settings)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--theory", action="store_true",
                   help="add the theory's prediction for each group's config (predicted_<metric> columns, dashed "
                        "lines; Adam runs get the optimum only, flagged; see ptforget.predict)")
    return p


#: ``key=value`` words of the command line and the flag each one is
KEY_VALUE_OPTIONS = {"metrics": "--metrics", "by": "--by", "out": "--out", "figures": None, "theory": None}


def _key_value_args(argv: Sequence[str]) -> list[str]:
    """``metrics=[a,b]`` / ``by=[k]`` / ``out=DIR`` / ``figures=false`` as their flags (a ReportError names a bad
    one); everything else unchanged."""
    out: list[str] = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or arg.startswith("-") or "/" in key:
            out.append(arg)
            continue
        if key not in KEY_VALUE_OPTIONS:
            raise ReportError(f"{key}={value}: not an option of ptforget-report; allowed: "
                              + ", ".join(f"{k}=..." for k in KEY_VALUE_OPTIONS))
        if key in ("figures", "theory"):
            if value.lower() not in ("true", "false"):
                raise ReportError(f"{key}={value}: allowed: true or false")
            if key == "figures" and value.lower() == "false":
                out.append("--no-figures")
            if key == "theory" and value.lower() == "true":
                out.append("--theory")
            continue
        if key in ("metrics", "by"):
            value = value.strip()
            if value.startswith("[") and value.endswith("]"):
                value = value[1:-1]
            value = ",".join(v.strip().strip("'\"") for v in value.split(",") if v.strip())
        out += [str(KEY_VALUE_OPTIONS[key]), value]
    return out


class ReportError(ValueError):
    """A bad ``ptforget-report`` option: the message is the one line printed."""


def validate_options(rows: Sequence[dict[str, Any]], metrics: Sequence[str] | None,
                     by: Sequence[str] | None) -> None:
    """``metrics`` must name metrics the runs have and ``by`` columns they have (ReportError otherwise)."""
    found = metric_keys(rows)
    for m in metrics or ():
        if m not in found:
            raise ReportError(f"metrics: {m!r} is not a metric of these runs; allowed: {', '.join(found) or '(none)'}")
    columns = [k for k in dict.fromkeys(k for r in rows for k in r) if not k.startswith("_") and k != "run"]
    for k in by or ():
        if k not in columns:
            raise ReportError(f"by: {k!r} is not a column of these runs; allowed: {', '.join(columns)}")


def out_problem(out: Path) -> str | None:
    """Why the report could not be written into ``out`` (a folder to create or a writable one), or None."""
    from ptforget.io import dir_problem

    return dir_problem(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script: ``ptforget-report DIR [metrics=[old_mass,drift_max]] [by=[k1,k2]] [out=OUT]`` (or
    ``--metrics a,b --by k1,k2 --out OUT``).

    Prints the table (fitted to the terminal's width) and the output folder, and on stderr one line per unreadable
    run it skipped; returns 0, or 2 (with a one-line error on stderr) when DIR does not exist or holds no
    summary.json, ``metrics`` or ``by`` name something the runs lack, or ``out`` is not writable; 1 when writing
    fails (full disk). Bad arguments exit with 2 through argparse.
    """
    parser = _parser()
    try:
        args = parser.parse_args(_key_value_args(sys.argv[1:] if argv is None else list(argv)))
    except ReportError as err:
        print(f"ptforget-report: error: {err}", file=sys.stderr)
        return 2
    root = Path(args.dir)
    if not root.is_dir():
        print(f"ptforget-report: error: {root} does not exist or is not a directory", file=sys.stderr)
        return 2
    if not find_summaries(root):
        print(f"ptforget-report: error: no summary.json under {root}", file=sys.stderr)
        return 2
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by is not None else None
    out = Path(args.out) if args.out is not None else root / "report"
    problem = out_problem(out)
    if problem is not None:
        print(f"ptforget-report: error: out={out}: not a writable folder ({problem}); pass out=DIR",
              file=sys.stderr)
        return 2
    try:
        res = write_report(root, out, metrics=metrics, figures=not args.no_figures, by=by, theory=args.theory)
    except ReportError as err:
        print(f"ptforget-report: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"ptforget-report: error: cannot write {err.filename or out}: {err.strerror or err}", file=sys.stderr)
        return 1
    from ptforget.terminal import print_table

    print_table(res["aggregate"], res["by"], res["metrics"])
    unreadable = [r for r in res["rows"] if r.get("status") == "unreadable"]
    for r in unreadable:
        print(f"skipped unreadable run {r['run']}: {r['reason']}", file=sys.stderr)
    for r in res["duplicates"]:
        print(f"counted once: {r['run']} holds the same run as {r['duplicate_of']} (config hash {r['config_hash']}, "
              f"seed {r.get('seed')})", file=sys.stderr)
    n_bad = sum(r.get("status", "complete") != "complete" for r in res["rows"])
    if n_bad:
        print(f"\n{n_bad} run(s) not complete ({len(unreadable)} unreadable): see {res['summary_md']}")
    if args.theory:
        print(f"\ntheory: predicted_<metric> columns in {res['summary_csv'].name} and {res['summary_md'].name}, "
              "theory_<metric>.png (dashed: the prediction for each group's config)")
    print(f"\nreport: {res['summary_md'].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
