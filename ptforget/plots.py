"""Figures for ptforget runs and theory checks (matplotlib, Agg backend, PNG files).

Every function takes data and an output path, writes one PNG (atomically: a temporary file in the same folder
renamed into place), closes its figure and returns the path as a ``Path``.

A *curve* is ``(steps, values)``. Where a function takes curves, an entry may also be a list of curves (one per
seed); it is then drawn as the mean with a shaded 95% t-band over the seeds present at each step.

Functions::

    plot_trajectories(curves, path, key="old_mass", title=None, theory=None)
    plot_drift_vs_delta(deltas, drifts, path, theory=None, show_bc=False, title=None)
    plot_replay(lambdas, final_weights, path, title=None)
    plot_starvation(batch_sizes, measured, predicted, path, logx=True, ylabel=..., title=None)
    plot_method_comparison(curves_by_method, path, keys=("old_mass", "new_error"), title=None)
    plot_density_evolution(snapshots, path, task_info=None, max_panels=4)
    plot_metric_vs_param(series, path, xlabel, ylabel, title=None, logy=False, predicted=None, colours=None)
    plot_facets(panels, path, key, title=None, logy=False, logx=False)   # one panel per generator or setting
    plot_search(points, path, xs, y, colour="generator")                 # the trials of a search

For a paper: one colour per objective or method everywhere (``OBJECTIVE_COLORS``, ``colour_of``), predictions
dashed in their run's colour (``theory=`` / ``predicted=``), power laws on log-log axes (``logx``/``logy``), and
one panel per setting where runs differ in Delta, start or length (``plot_facets``: facet = the setting, colour
key = the method).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ptforget.io import atomic_replace
from ptforget.labels import label_of
from ptforget.stats import mean_ci, metric_range

Curve = tuple[Sequence[float], Sequence[float]]


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically and close it."""
    path = Path(path)
    try:
        with atomic_replace(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _title(ax: Any, text: str, width: int = 64) -> None:
    """A figure title wrapped to the axes' width (a long one would be cut off at the figure's edge)."""
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(text, width)) or text, fontsize="medium")


def _is_group(entry: Any) -> bool:
    """True if ``entry`` is a list of curves (several seeds) rather than a single (steps, values) curve."""
    if isinstance(entry, Mapping) or len(entry) == 0:
        return False
    first = entry[0]
    if np.ndim(first) == 0:
        return False
    return np.ndim(first[0]) >= 1 if len(first) else False


def mean_band(curves: Sequence[Curve], level: float = 0.95,
              bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t-interval over several curves, step by step (union of steps; each step uses the curves that
    have it), the band clipped to ``bounds`` (the values the metric can take). Returns (steps, mean, lo, hi);
    lo/hi equal the mean where only one curve has the step."""
    by_step: dict[float, list[float]] = {}
    for steps, vals in curves:
        for s, v in zip(np.asarray(steps, float), np.asarray(vals, float), strict=True):
            if np.isfinite(v):
                by_step.setdefault(float(s), []).append(float(v))
    xs = np.array(sorted(by_step))
    mean, lo, hi = (np.empty(len(xs)) for _ in range(3))
    for i, s in enumerate(xs):
        st = mean_ci(by_step[s], level)
        mean[i] = st["mean"]
        lo[i] = st["lo"] if st["n"] > 1 else st["mean"]
        hi[i] = st["hi"] if st["n"] > 1 else st["mean"]
    return xs, mean, np.maximum(lo, bounds[0]), np.minimum(hi, bounds[1])


def _draw(ax: Any, entry: Any, label: str, color: Any = None, key: str | None = None, **kw: Any) -> Any:
    """Draw a curve or a group of curves (mean line + band, clipped to the range of metric ``key``) on ``ax``;
    returns the line."""
    if _is_group(entry):
        xs, m, lo, hi = mean_band(entry, bounds=metric_range(key) if key else (-np.inf, np.inf))
        n = len(entry)
        (line,) = ax.plot(xs, m, color=color, label=f"{label} (n={n})" if n > 1 else label, **kw)
        if n > 1:
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        return line
    steps, vals = entry
    (line,) = ax.plot(np.asarray(steps, float), np.asarray(vals, float), color=color, label=label, **kw)
    return line


def _theory_items(theory: Any, default_label: str = "theory") -> list[tuple[str, Curve]]:
    if theory is None:
        return []
    if isinstance(theory, Mapping):
        return list(theory.items())
    return [(default_label, theory)]


def plot_trajectories(curves: Mapping[str, Any], path: str | os.PathLike, key: str = "old_mass",
                      title: str | None = None, theory: Any = None, logy: bool = False,
                      ylabel: str | None = None, logx: bool = False,
                      colours: Mapping[str, str] | None = None) -> Path:
    """Learned curves of ``key`` against step.

    ``curves``: label -> (steps, values), or label -> list of (steps, values) (seeds: mean and 95% band).
    ``theory``: None, one (steps, values) curve, or label -> curve; a theory label that is also a curve's label
    is drawn dashed in that curve's colour, the others dashed in black/grey shades.
    ``logy`` / ``logx``: log scales (a power law such as 1/t is a straight line on log-log axes; non-positive
    values, step 0 included, are not drawn there); ``ylabel`` replaces the label of ``key``. ``colours``: label ->
    a colour key (an objective: ``OBJECTIVE_COLORS``), so the same objective has the same colour everywhere.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    taken: dict[str, Any] = {}
    drawn: dict[str, Any] = {}
    for label, entry in curves.items():
        colour = colour_of(colours[label], taken) if colours and label in colours else None
        drawn[str(label)] = _draw(ax, _positive_steps(entry) if logx else entry, str(label), color=colour, key=key)
    shade = 0
    for label, curve in _theory_items(theory):
        steps, vals = (np.asarray(c, float) for c in curve)
        if logx:
            steps, vals = steps[steps > 0], vals[steps > 0]
        if str(label) in drawn:
            ax.plot(steps, vals, "--", color=drawn[str(label)].get_color(), lw=1.4, label=f"{label}: theory")
        else:
            ax.plot(steps, vals, ("--", ":", "-.")[shade % 3], color=str(0.25 * (shade % 3)), label=str(label),
                    lw=1.6)
            shade += 1
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(label_of("step"))
    ax.set_ylabel(ylabel or label_of(key))
    _title(ax, title or f"{label_of(key)} over training")
    ax.grid(alpha=0.3)
    if curves or theory is not None:
        if len(curves) + len(_theory_items(theory)) > 5:  # beside the axes: inside, it would hide curves
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize="small")
    return _save(fig, path)


def _positive_steps(entry: Any) -> Any:
    """A curve (or group of curves) without its steps <= 0, for a log step axis."""
    if _is_group(entry):
        return [_positive_steps(c) for c in entry]
    steps, vals = (np.asarray(c, float) for c in entry)
    return steps[steps > 0], vals[steps > 0]


def _positive(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, float).copy()
    y[~(y > 0)] = np.nan
    return y


def plot_drift_vs_delta(deltas: Sequence[float], drifts: Any, path: str | os.PathLike, theory: Any = None,
                        show_bc: bool = False, title: str | None = None,
                        ylabel: str = "old-mode drift (sup over the run)") -> Path:
    """Drift against separation Delta on a log y-scale.

    ``drifts``: values aligned with ``deltas``, or label -> values. ``theory``: None, values aligned with
    ``deltas``, a (delta_grid, values) pair, or a callable Delta -> value (evaluated on a fine grid).
    ``show_bc`` adds the Bhattacharyya coefficient exp(-Delta^2/8) as a dotted reference.
    Non-positive values are not drawn (log scale).
    """
    d = np.asarray(deltas, float)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = drifts.items() if isinstance(drifts, Mapping) else [("learned", drifts)]
    for label, vals in series:
        ax.plot(d, _positive(vals), "o-", label=str(label))
    grid = np.linspace(d.min(), d.max(), 200) if d.size else d
    if theory is not None:
        if callable(theory):
            tx, ty = grid, np.array([float(theory(x)) for x in grid])
        elif len(theory) == 2 and np.ndim(theory[0]) >= 1:  # (delta_grid, values)
            tx, ty = np.asarray(theory[0], float), np.asarray(theory[1], float)
        else:
            tx, ty = d, np.asarray(theory, float)
        ax.plot(tx, _positive(ty), "--", color="black", label="theory")
    if show_bc:
        ax.plot(grid, np.exp(-(grid**2) / 8.0), ":", color="grey", label=r"BC $=e^{-\Delta^2/8}$")
    ax.set_yscale("log")
    ax.set_xlabel(r"separation $\Delta$")
    ax.set_ylabel(ylabel)
    _title(ax, title or r"drift vs $\Delta$")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _seed_stats(vals: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(mean, lo, hi, per-point seed values) of values aligned with x, each a number or a list over seeds."""
    per = [np.atleast_1d(np.asarray(v, float)) for v in vals]
    st = [mean_ci(v) for v in per]
    mean = np.array([s["mean"] for s in st])
    lo = np.array([s["lo"] if s["n"] > 1 else s["mean"] for s in st])
    hi = np.array([s["hi"] if s["n"] > 1 else s["mean"] for s in st])
    return mean, lo, hi, per


def plot_replay(lambdas: Sequence[float], final_weights: Any, path: str | os.PathLike,
                title: str | None = None) -> Path:
    """Final old-component weight against replay fraction lambda, with the y = x line.

    ``final_weights``: values aligned with ``lambdas`` (each a number, or a list with one value per seed: drawn
    as the seeds' dots, their mean and 95% interval, one legend entry), or label -> such values.
    """
    lam = np.asarray(lambdas, float)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    series = final_weights.items() if isinstance(final_weights, Mapping) else [("learned", final_weights)]
    for label, vals in series:
        mean, lo, hi, per = _seed_stats(vals)
        n = max(len(p) for p in per) if per else 1
        (line,) = ax.plot(lam, mean, "o-", label=f"{label} (mean of {n} seeds, 95% CI)" if n > 1 else str(label))
        if n > 1:
            ax.fill_between(lam, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            for x, p in zip(lam, per, strict=True):
                ax.plot(np.full(len(p), x), p, ".", color=line.get_color(), alpha=0.5, ms=4)
    lo = float(min(0.0, lam.min())) if lam.size else 0.0
    hi = float(max(1.0, lam.max())) if lam.size else 1.0
    ax.plot([lo, hi], [lo, hi], "--", color="black", label="y = x")
    ax.set_xlabel(r"replay fraction $\lambda$")
    ax.set_ylabel("final old-component weight")
    _title(ax, title or "replay: final weight vs replay fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _linthresh(*series: Any) -> float:
    """The linear range of a symlog axis: below the smallest positive value drawn (so zeros show, on the axis's
    linear part, and every positive value sits on its log part)."""
    pos = [float(v) for vals in series for v in np.ravel(np.asarray(vals, float)) if np.isfinite(v) and v > 0]
    return 10.0 ** np.floor(np.log10(min(pos))) if pos else 1e-3


def plot_starvation(batch_sizes: Sequence[float], measured: Mapping[str, Sequence[float]],
                    predicted: Mapping[str, Sequence[float]], path: str | os.PathLike, logx: bool = True,
                    ylabel: str = "starved fraction of batches", title: str | None = None) -> Path:
    """Measured (markers, solid) and predicted (dashed, same colour for the same label) quantities against
    batch size, on a log y-scale that keeps zeros visible (symlog: linear below the smallest positive value; a
    zero is drawn on the axis's floor, as a hollow marker) and a log-2 x-scale when ``logx``. Both dicts map
    label -> values aligned with ``batch_sizes``; a predicted label without a measured one gets its own colour."""
    b = np.asarray(batch_sizes, float)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors: dict[str, Any] = {}
    for label, vals in measured.items():
        (line,) = ax.plot(b, np.asarray(vals, float), "o-", label=f"{label} (measured)")
        colors[label] = line.get_color()
        zero = np.asarray(vals, float) == 0
        if zero.any():
            ax.plot(b[zero], np.zeros(int(zero.sum())), "o", mfc="white", color=line.get_color(), zorder=3)
    for label, vals in predicted.items():
        ax.plot(b, np.asarray(vals, float), "--", color=colors.get(label), label=f"{label} (predicted)")
    ax.set_yscale("symlog", linthresh=_linthresh(*measured.values(), *predicted.values()))
    ax.set_ylim(bottom=0)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    _title(ax, title or "starvation vs batch size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _method_curve(data: Mapping[str, Any], key: str) -> Any:
    if "step" in data and key in data and np.ndim(data["step"]) == 1:  # columns of one trajectory
        return (data["step"], data[key])
    return data.get(key)


def plot_method_comparison(curves_by_method: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                           keys: Sequence[str] = ("old_mass", "new_error"), title: str | None = None,
                           theory: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Side-by-side panels (default: old mass and new-mode error vs step), one line per method.

    ``curves_by_method``: method -> {metric: curve or list of curves}, or method -> trajectory columns
    ``{"step": [...], "old_mass": [...], "new_error": [...]}``. A method missing a metric is skipped there.
    ``theory``: method -> {metric: curve, or a number (a predicted end value, drawn as a horizontal line)}, dashed
    in the method's colour. A method named as an objective (``sdft``) has that objective's colour.
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.0), squeeze=False)
    taken: dict[str, Any] = {}
    for method, data in curves_by_method.items():
        color = colour_of(str(method), taken)
        for ax, key in zip(axes[0], keys, strict=True):
            entry = _method_curve(data, key)
            if entry is not None:
                _draw(ax, entry, str(method), color=color, key=key)
            pred = (theory or {}).get(method, {}).get(key)
            if isinstance(pred, int | float):
                ax.axhline(float(pred), linestyle="--", color=color, lw=1.2, label=f"{method}: theory")
            elif pred is not None:
                ax.plot(np.asarray(pred[0], float), np.asarray(pred[1], float), "--", color=color, lw=1.2,
                        label=f"{method}: theory")
    for ax, key in zip(axes[0], keys, strict=True):
        ax.set_xlabel(label_of("step"))
        ax.set_ylabel(label_of(key))
        ax.set_title(label_of(key))
        ax.grid(alpha=0.3)
    legend = next((ax for ax in axes[0] if ax.get_legend_handles_labels()[0]), None)
    if legend is not None:  # one legend: every panel draws the same methods in the same colours
        legend.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_density_evolution(snapshots: Sequence[tuple], path: str | os.PathLike,
                           task_info: Mapping[str, Any] | None = None, max_panels: int = 4) -> Path:
    """How the learned density moves during training.

    ``snapshots``: list of ``(step, xs, density)`` (1-D) or ``(step, X, Y, Z)`` (2-D, meshgrid arrays).
    ``task_info`` (all optional): ``target`` = ``(xs, density)`` / ``(X, Y, Z)`` drawn dashed black,
    ``old_mean`` / ``new_mean`` (scalars in 1-D, pairs in 2-D) marked, ``title``, ``xlabel``.
    1-D: one axis, a curve per snapshot coloured by step (viridis) with a colour bar.
    2-D: up to ``max_panels`` contour panels at evenly spaced snapshots (first and last included).
    """
    info = dict(task_info or {})
    if not snapshots:
        raise ValueError("no snapshots")
    snaps = sorted(snapshots, key=lambda s: s[0])
    two_d = len(snaps[0]) == 4
    if not two_d:
        fig, ax = plt.subplots(figsize=(6.8, 4.2))
        steps = np.array([float(s[0]) for s in snaps])
        norm = matplotlib.colors.Normalize(vmin=steps.min(), vmax=steps.max() if steps.max() > steps.min()
                                           else steps.min() + 1)
        cmap = matplotlib.colormaps["viridis"]
        for step, xs, dens in snaps:
            ax.plot(np.asarray(xs, float), np.asarray(dens, float), color=cmap(norm(float(step))), lw=1.4)
        if info.get("target") is not None:
            tx, ty = info["target"]
            ax.plot(np.asarray(tx, float), np.asarray(ty, float), "--", color="black", lw=1.6, label="target p*")
        for name, style in (("old_mean", ":"), ("new_mean", "-.")):
            if info.get(name) is not None:
                ax.axvline(float(np.ravel(info[name])[0]), ls=style, color="grey", lw=1,
                           label=name.replace("_", " "))
        sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="step")
        ax.set_xlabel(info.get("xlabel", "x"))
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.set_title(info.get("title", "density over training"))
        return _save(fig, path)

    k = min(max_panels, len(snaps))
    idx = sorted({round(float(i)) for i in np.linspace(0, len(snaps) - 1, k)})
    fig, axes = plt.subplots(1, len(idx), figsize=(3.6 * len(idx), 3.6), squeeze=False)
    zmax = max(float(np.nanmax(snaps[i][3])) for i in idx)
    levels = np.linspace(0.0, zmax if zmax > 0 else 1.0, 13)  # shared scale, so panels compare
    for ax, i in zip(axes[0], idx, strict=True):
        step, X, Y, Z = snaps[i]
        ax.contourf(np.asarray(X), np.asarray(Y), np.asarray(Z), levels=levels, cmap="viridis", extend="both")
        if info.get("target") is not None:
            TX, TY, TZ = info["target"]
            ax.contour(np.asarray(TX), np.asarray(TY), np.asarray(TZ), levels=6, colors="black", linestyles="dashed",
                       linewidths=0.8)
        for name, marker in (("old_mean", "o"), ("new_mean", "x")):
            if info.get(name) is not None:
                m = np.ravel(info[name])
                ax.plot(m[0], m[1], marker, color="white", mec="black", ms=8)
        ax.set_title(f"step {step}")
        ax.set_aspect("equal", adjustable="box")
    fig.suptitle(info.get("title", "density over training"))
    fig.tight_layout()
    return _save(fig, path)


def plot_density_panels(panels: Mapping[tuple[str, str], tuple[Sequence[tuple], Mapping[str, Any]]],
                        path: str | os.PathLike, title: str | None = None) -> Path:
    """1-D density snapshots of several runs on one page: rows x columns of panels keyed ``(row, column)`` (e.g.
    family x objective), each ``(snapshots, task_info)`` as for ``plot_density_evolution`` (1-D only): a curve
    per snapshot coloured by its step (one colour bar for the page), the target p* dashed, the modes marked."""
    rows = list(dict.fromkeys(r for r, _ in panels))
    cols = list(dict.fromkeys(c for _, c in panels))
    if not panels:
        raise ValueError("no panels")
    steps = [float(s[0]) for snaps, _ in panels.values() for s in snaps]
    norm = matplotlib.colors.Normalize(vmin=min(steps), vmax=max(steps) if max(steps) > min(steps) else min(steps) + 1)
    cmap = matplotlib.colormaps["viridis"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(4.4 * len(cols), 2.9 * len(rows)), squeeze=False,
                             sharex=True)
    for (r, c), (snaps, info) in panels.items():
        ax = axes[rows.index(r)][cols.index(c)]
        for step, xs, dens in sorted(snaps, key=lambda s: s[0]):
            ax.plot(np.asarray(xs, float), np.asarray(dens, float), color=cmap(norm(float(step))), lw=1.3)
        if info.get("target") is not None:
            tx, ty = info["target"]
            ax.plot(np.asarray(tx, float), np.asarray(ty, float), "--", color="black", lw=1.4, label="target p*")
        for name, style, lab in (("old_mean", ":", "old mode"), ("new_mean", "-.", "new mode")):
            if info.get(name) is not None:
                ax.axvline(float(np.ravel(info[name])[0]), ls=style, color="grey", lw=1, label=lab)
        ax.set_title(f"{r}: {c}" + (f" ({info['note']})" if info.get("note") else ""), fontsize="medium")
        ax.grid(alpha=0.3)
    for i in range(len(rows)):
        axes[i][0].set_ylabel("density")
        for j in range(len(cols)):
            if (rows[i], cols[j]) not in panels:
                axes[i][j].set_visible(False)
    for j in range(len(cols)):
        axes[-1][j].set_xlabel("x")
    first = axes[0][0]
    if first.get_legend_handles_labels()[0]:
        first.legend(fontsize="small")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=label_of("step"), shrink=0.8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_metric_vs_param(series: Mapping[str, tuple], path: str | os.PathLike, xlabel: str, ylabel: str,
                         title: str | None = None, logy: bool = False,
                         predicted: Mapping[str, tuple] | None = None,
                         colours: Mapping[str, str] | None = None, logx: bool = False) -> Path:
    """Aggregated metric against a numeric parameter, one line per label.

    ``series``: label -> ``(xs, means)`` or ``(xs, means, lo, hi)`` (the interval is drawn as error bars
    where finite). ``predicted``: label -> ``(xs, values)``, the theory's line for that series, dashed in its
    colour. ``colours``: label -> a colour key (an objective), so one objective has one colour in every figure.
    ``logx``: a log x-scale (a scaling law).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    taken: dict[str, Any] = {}
    for label, data in series.items():
        xs, ms = np.asarray(data[0], float), np.asarray(data[1], float)
        colour = colour_of(colours[label], taken) if colours and label in colours else None
        if len(data) >= 4:
            lo, hi = np.asarray(data[2], float), np.asarray(data[3], float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            err = np.vstack([np.where(ok, ms - lo, 0.0), np.where(ok, hi - ms, 0.0)])
            line = ax.errorbar(xs, ms, yerr=err, fmt="o-", capsize=3, label=str(label), color=colour).lines[0]
        else:
            (line,) = ax.plot(xs, ms, "o-", label=str(label), color=colour)
        if predicted and label in predicted:
            px, py = predicted[label]
            ax.plot(np.asarray(px, float), np.asarray(py, float), "--", color=line.get_color(), lw=1.4,
                    label=f"{label}: theory")
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, title or f"{ylabel} vs {xlabel}")
    ax.grid(alpha=0.3)
    if series:
        many = len(series) * (2 if predicted else 1) > 6
        ax.legend(fontsize="small", **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if many else {}))
    return _save(fig, path)


#: one colour per objective in every figure of a report (others: the next unused colour of the cycle)
OBJECTIVE_COLORS = {"fkl": "#377eb8", "rkl": "#e41a1c", "fkl_replay": "#4daf4a", "rkl_replay": "#984ea3",
                    "sdft": "#ff7f00", "ttt_discover": "#a65628", "oapl": "#f781bf"}
LINE_STYLES = ("-", (0, (1, 1)), "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (3, 1)))


def colour_of(name: str, taken: dict[str, Any]) -> Any:
    """The colour of an objective (OBJECTIVE_COLORS), or a fixed one from the cycle for any other name."""
    if name not in taken:
        cycle = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if c not in OBJECTIVE_COLORS.values()]
        taken[name] = OBJECTIVE_COLORS.get(name) or cycle[len(taken) % len(cycle)]
    return taken[name]


def plot_facets(panels: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]], path: str | os.PathLike,
                key: str = "old_mass", title: str | None = None, logy: bool = False, logx: bool = False) -> Path:
    """One panel per facet (a generator), one colour per colour key (an objective), one line style per style key
    (the other settings); in each, the runs' mean and 95% band over seeds and the theory's curve dashed.

    ``panels``: facet -> {(colour key, style key): {"runs": [curve per seed], "theory": curve or None,
    "final": a predicted end value or None (drawn as a marker at the last step when there is no curve)}}.
    """
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1.8, 3.9), sharey=True, squeeze=False)
    colours: dict[str, Any] = {}
    styles = {s: LINE_STYLES[i % len(LINE_STYLES)]
              for i, s in enumerate(dict.fromkeys(s for p in panels.values() for _, s in p))}
    handles: dict[str, Any] = {}
    for ax, (facet, lines) in zip(axes[0], panels.items(), strict=False):
        for (ckey, skey), data in lines.items():
            colour = colour_of(ckey, colours)
            label = ", ".join(x for x in (ckey, skey) if x)
            line = _draw(ax, list(data["runs"]), label, color=colour, key=key, linestyle=styles[skey], lw=1.5)
            handles.setdefault(label, line)
            theory = data.get("theory")
            if theory is not None:
                ax.plot(np.asarray(theory[0], float), np.asarray(theory[1], float), "--", color=colour, lw=1.2,
                        alpha=0.9)
            elif data.get("final") is not None and np.isfinite(data["final"]):
                end = max(float(np.max(c[0])) for c in data["runs"])
                ax.plot([end], [data["final"]], marker="x", ms=8, mew=2, color=colour, linestyle="none")
        ax.set_title(str(facet))
        ax.set_xlabel(label_of("step"))
        ax.grid(alpha=0.3)
        if logy:
            ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
    axes[0][0].set_ylabel(label_of(key))
    from matplotlib.lines import Line2D

    extra = [Line2D([], [], color="0.3", linestyle="--", label="theory (same config)"),
             Line2D([], [], color="0.3", marker="x", linestyle="none", label="theory: end value only")]
    axes[0][-1].legend(handles=[*handles.values(), *extra], fontsize="small", loc="upper left",
                       bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title or f"{label_of(key)} over training", fontsize="medium")
    return _save(fig, path)


def plot_search(points: Sequence[Mapping[str, Any]], path: str | os.PathLike, xs: Sequence[str], y: str,
                colour: str = "generator", logx: Sequence[str] = (), title: str | None = None) -> Path:
    """The trials of a search: ``y`` against each of ``xs`` (one panel each), one colour per value of ``colour``,
    the best trial ringed. ``points``: one mapping per trial (its settings and ``y``)."""
    good = [p for p in points if isinstance(p.get(y), int | float) and np.isfinite(p[y])]
    fig, axes = plt.subplots(1, len(xs), figsize=(4.2 * len(xs) + 1.6, 3.8), sharey=True, squeeze=False)
    taken: dict[str, Any] = {}
    best = max(good, key=lambda p: p[y]) if good else None
    for ax, key in zip(axes[0], xs, strict=True):
        for value in dict.fromkeys(str(p.get(colour)) for p in good):
            sel = [p for p in good if str(p.get(colour)) == value]
            ax.scatter([float(p[key]) for p in sel], [float(p[y]) for p in sel], s=28, label=f"{colour}={value}",
                       color=colour_of(value, taken), alpha=0.85)
        if best is not None:
            ax.scatter([float(best[key])], [float(best[y])], s=160, facecolors="none", edgecolors="black",
                       label="largest gap")
        if key in logx:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label_of(key))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(label_of(y))
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title or f"{label_of(y)}: {len(good)} trials", fontsize="medium")
    return _save(fig, path)


__all__: list[str] = [
    "label_of",
    "mean_band",
    "plot_density_evolution",
    "plot_density_panels",
    "plot_drift_vs_delta",
    "plot_facets",
    "plot_method_comparison",
    "plot_metric_vs_param",
    "plot_replay",
    "plot_search",
    "plot_starvation",
    "plot_trajectories",
]


#: colour and short tag of each theory verdict in the transfer figure
VERDICT_STYLE = {"supports theory": ("#4daf4a", "T"), "supports rival": ("#e41a1c", "R"),
                 "undecided": ("#ffbf00", "U"), "untestable": ("#999999", "X"), "not converged": ("#377eb8", "C")}


def plot_transfer(claims: Sequence[str], families: Sequence[str], cells: Mapping[tuple[str, str], Mapping[str, int]],
                  path: str | os.PathLike, title: str | None = None) -> Path:
    """Claims against generator families; each cell shows how many of its theory rows got each verdict (a stacked
    bar of the counts, with the counts written out; blank: not tested on that family)."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(families), 1.4 + 0.46 * len(claims)))
    for i, c in enumerate(claims):
        for j, f in enumerate(families):
            cnt = cells.get((c, f))
            if not cnt:
                continue
            total = sum(cnt.values())
            x = j + 0.04
            for v, (colour, _) in VERDICT_STYLE.items():
                w = 0.92 * cnt.get(v, 0) / total
                if w:
                    ax.add_patch(plt.Rectangle((x, i + 0.08), w, 0.84, color=colour, ec="white", lw=1))
                    x += w
            label = " ".join(f"{VERDICT_STYLE[v][1]}{k}" for v, k in cnt.items() if k)
            ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(families))
    ax.set_ylim(len(claims), 0)
    ax.set_xticks([j + 0.5 for j in range(len(families))], list(families))
    ax.set_yticks([i + 0.5 for i in range(len(claims))], list(claims))
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for sp in ax.spines.values():
        sp.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c, _ in VERDICT_STYLE.values()]
    ax.legend(handles, [f"{t}: {v}" for v, (_, t) in VERDICT_STYLE.items()], loc="upper center",
              bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=7, frameon=False)
    ax.set_title(title or "Theory rows per claim and family: counts of each verdict (blank: not tested)", fontsize=9,
                 pad=22)
    return _save(fig, path)
