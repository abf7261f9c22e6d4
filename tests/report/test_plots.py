"""Every plot function writes a valid PNG, returns its path and closes its figure."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from ptforget import plots, stats
from tests.report.conftest import is_png


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    assert plots.plt.get_fignums() == []


def test_backend_is_agg() -> None:
    assert matplotlib.get_backend().lower() == "agg"


def test_plot_trajectories_single_grouped_theory(tmp_path: Path) -> None:
    steps = np.arange(0, 101, 10)
    seeds = [(steps, 0.5 * np.exp(-steps / (40 + 5 * s))) for s in range(3)]
    curves = {"fkl": seeds, "rkl": (steps, np.full(len(steps), 0.5))}
    theory = {"P1": (steps, 0.5 * np.exp(-steps / 45)), "P2": (steps, 0.4 + 0 * steps)}
    p = plots.plot_trajectories(curves, tmp_path / "sub" / "traj.png", key="old_mass", title="t", theory=theory)
    assert p == tmp_path / "sub" / "traj.png" and is_png(p)
    assert is_png(plots.plot_trajectories({"a": seeds[:1]}, tmp_path / "one.png", theory=(steps, steps / 100)))


def test_mean_band_matches_mean_ci() -> None:
    curves = [([0, 1, 2], [1.0, 2.0, 3.0]), ([0, 1], [3.0, 4.0]), ([0, 1], [2.0, math.nan])]
    xs, m, lo, hi = plots.mean_band(curves)
    assert list(xs) == [0, 1, 2]
    assert m == pytest.approx([2.0, 3.0, 3.0])
    half = stats.mean_ci([1.0, 3.0, 2.0])["ci"]
    assert lo[0] == pytest.approx(2.0 - half) and hi[0] == pytest.approx(2.0 + half)
    assert lo[2] == hi[2] == 3.0  # a single curve at step 2: no band


def test_plot_drift_vs_delta(tmp_path: Path) -> None:
    d = [1.0, 2.0, 4.0, 6.0]
    drifts = {"gmm": [0.5, 0.3, 0.05, 0.0], "flow": [0.6, 0.2, 0.1, 0.01]}
    assert is_png(plots.plot_drift_vs_delta(d, drifts, tmp_path / "a.png", theory=lambda x: math.exp(-x * x / 8),
                                            show_bc=True))
    assert is_png(plots.plot_drift_vs_delta(d, [0.5, 0.3, 0.05, 0.01], tmp_path / "b.png",
                                            theory=[0.4, 0.3, 0.1, 0.01]))
    assert is_png(plots.plot_drift_vs_delta(d, [0.5, 0.3, 0.05, 0.01], tmp_path / "c.png",
                                            theory=(np.linspace(1, 6, 20), np.linspace(0.5, 0.01, 20))))


def test_plot_replay_and_starvation(tmp_path: Path) -> None:
    lam = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert is_png(plots.plot_replay(lam, [0.01, 0.2, 0.45, 0.8, 0.97], tmp_path / "r.png"))
    assert is_png(plots.plot_replay(lam, {"fkl": lam, "rkl": lam[::-1]}, tmp_path / "r2.png"))
    b = [16, 64, 256, 1024]
    p = plots.plot_starvation(b, {"old": [1e-1, 3e-2, 1e-2, 2e-3]}, {"old": [1.1e-1, 2.9e-2, 9e-3, 2.5e-3],
                                                                   "new": [1, 1, 1, 1]}, tmp_path / "s.png")
    assert is_png(p)


def test_plot_method_comparison(tmp_path: Path) -> None:
    steps = np.arange(0, 50, 5)
    cols = {"step": steps, "old_mass": 0.5 - steps / 200, "new_error": np.exp(-steps / 10)}
    per_metric = {"old_mass": [(steps, 0.5 + 0 * steps), (steps, 0.49 + 0 * steps)],
                  "new_error": (steps, np.exp(-steps / 20))}
    p = plots.plot_method_comparison({"fkl": cols, "rkl": per_metric, "only_old": {"old_mass": (steps, steps)}},
                                     tmp_path / "m.png", title="methods")
    assert is_png(p)


def test_plot_density_evolution_1d_and_2d(tmp_path: Path) -> None:
    xs = np.linspace(-6, 6, 200)

    def mix(w: float, mu: float) -> np.ndarray:
        return (w * np.exp(-(xs + 3) ** 2 / 2) + (1 - w) * np.exp(-(xs - mu) ** 2 / 2)) / math.sqrt(2 * math.pi)

    snaps = [(s, xs, mix(0.5 - s / 400, 3 * s / 100)) for s in (0, 25, 50, 75, 100)]
    info = {"target": (xs, mix(0.3, 3)), "old_mean": -3.0, "new_mean": 3.0, "title": "1-D"}
    assert is_png(plots.plot_density_evolution(snaps, tmp_path / "d1.png", info))

    X, Y = np.meshgrid(np.linspace(-5, 5, 40), np.linspace(-5, 5, 40))

    def mix2(m: float) -> np.ndarray:
        return np.exp(-((X + 2) ** 2 + Y**2) / 2) + np.exp(-((X - m) ** 2 + Y**2) / 2)

    snaps2 = [(s, X, Y, mix2(2 * s / 100)) for s in range(0, 101, 10)]
    info2 = {"target": (X, Y, mix2(2.0)), "old_mean": (-2, 0), "new_mean": (2, 0)}
    assert is_png(plots.plot_density_evolution(snaps2, tmp_path / "d2.png", info2, max_panels=3))
    with pytest.raises(ValueError):
        plots.plot_density_evolution([], tmp_path / "d3.png")


def test_plot_metric_vs_param(tmp_path: Path) -> None:
    series = {"fkl": ([3, 6], [0.1, 0.01], [0.05, math.nan], [0.15, math.nan]), "rkl": ([3, 6], [0.5, 0.5])}
    assert is_png(plots.plot_metric_vs_param(series, tmp_path / "v.png", "task.delta", "old_mass", logy=True))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The axes of every figure saved (read before the figure is closed)."""
    seen: list = []
    save = plots._save

    def capture(fig, path):
        seen.append([(ax, [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
                      ax.get_ylim(), ax.get_yscale(), ax.get_ylabel()) for ax in fig.axes])
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    return seen


def test_replay_seeds_are_one_legend_entry_with_a_band(tmp_path: Path, drawn: list) -> None:
    lam = [0.0, 0.1, 0.3]
    per_seed = [[0.01, 0.02, 0.0, 0.01, 0.02], [0.1, 0.11, 0.09, 0.1, 0.12], [0.3, 0.29, 0.31, 0.3, 0.3]]
    assert is_png(plots.plot_replay(lam, per_seed, tmp_path / "p5.png"))
    (ax, legend, *_), = drawn[0]
    assert legend == ["learned (mean of 5 seeds, 95% CI)", "y = x"]  # not five identical "learned" entries
    assert ax.collections  # the band


def test_starvation_zeros_stay_visible_and_the_label_names_the_statistic(tmp_path: Path, drawn: list) -> None:
    b = [4, 16, 64]
    plots.plot_starvation(b, {"fixed slots": [0.0, 0.0, 0.0], "mixture": [0.3, 0.05, 0.001]},
                          {"mixture": [0.31, 0.06, 0.0009]}, tmp_path / "p13.png")
    (ax, _, ylim, yscale, ylabel), = drawn[0]
    assert yscale == "symlog" and ylim[0] <= 0.0  # a zero is on the axis, not cut by a log scale
    assert ylabel == "starved fraction of batches"


def test_axis_labels_are_human(tmp_path: Path, drawn: list) -> None:
    steps = np.arange(0, 50, 10)
    plots.plot_trajectories({"a": (steps, steps / 50)}, tmp_path / "t.png", key="comp_drift")
    plots.plot_metric_vs_param({"x": ([1, 2], [0.1, 0.2])}, tmp_path / "v.png", xlabel=plots.label_of("task.delta"),
                               ylabel=plots.label_of("drift_max"))
    assert drawn[0][0][4].startswith("old-component drift")
    assert drawn[1][0][4] == "old-core drift since the start, max over the run"


def test_density_panels_one_page_for_every_family(tmp_path: Path, drawn: list) -> None:
    xs = np.linspace(-6, 6, 100)
    dens = np.exp(-xs**2 / 2) / math.sqrt(2 * math.pi)
    panel = ([(0, xs, dens), (50, xs, 0.9 * dens)], {"target": (xs, dens), "old_mean": [-3.0], "new_mean": [3.0]})
    panels = {(g, o): panel for g in ("gmm", "mdn", "flow") for o in ("forward KL", "reverse KL")}
    assert is_png(plots.plot_density_panels(panels, tmp_path / "density.png", title="every family"))
    titles = [ax.get_title() for ax, *_ in drawn[0]]
    assert "flow: reverse KL" in titles and "gmm: forward KL" in titles
