"""Figure helpers for a paper: a 1/t law on log-log axes, one colour per objective in every figure, predicted lines
dashed in their run's colour, bands that stay in a metric's range, and one panel per generator."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pytest

from ptforget import plots
from tests.report.conftest import is_png


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """The axes' lines and fills of every figure saved (read before it is closed)."""
    seen: list = []
    save = plots._save

    def capture(fig, path):
        seen.append([{"lines": [(ln.get_xdata(), ln.get_ydata(), mcolors.to_hex(ln.get_color()), ln.get_linestyle(),
                                 ln.get_label()) for ln in ax.get_lines()],
                      "fills": [c.get_paths()[0].vertices for c in ax.collections],
                      "scales": (ax.get_xscale(), ax.get_yscale()), "title": ax.get_title()} for ax in fig.axes])
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    return seen


def test_a_one_over_t_law_on_log_log_axes(tmp_path: Path, figures: list) -> None:
    t = np.arange(0, 1001, 50.0)
    law = 0.5 / (1 + 0.5 * 0.5 * t)
    seeds = [(t, law * (1 + 0.01 * k)) for k in range(3)]
    assert is_png(plots.plot_trajectories({"gmm": seeds}, tmp_path / "p2.png", key="weight", logx=True, logy=True,
                                          theory={"gmm": (t, law)}))
    (ax,) = figures[0]
    assert ax["scales"] == ("log", "log")
    run, theory = ax["lines"][0], ax["lines"][1]
    assert run[0].min() > 0 and theory[0].min() > 0  # step 0 is not drawn on a log axis
    assert theory[3] == "--" and theory[2] == run[2]  # the prediction dashed in the run's own colour
    slope = np.polyfit(np.log(theory[0][-8:]), np.log(theory[1][-8:]), 1)[0]
    assert slope == pytest.approx(-1, abs=0.05)  # a straight line of slope -1 on these axes


def test_one_colour_per_objective_in_every_figure(tmp_path: Path, figures: list) -> None:
    series = {"generator=gmm, objective=fkl": ([3, 5], [0.1, 0.05]),
              "generator=mdn, objective=fkl": ([3, 5], [0.2, 0.1]),
              "generator=gmm, objective=rkl": ([3, 5], [0.5, 0.5])}
    colours = {k: k.rsplit("=", 1)[1] for k in series}
    plots.plot_metric_vs_param(series, tmp_path / "a.png", "Delta", "old mass", colours=colours)
    plots.plot_trajectories({"sft": ([0, 1], [0.5, 0.1])}, tmp_path / "b.png", colours={"sft": "fkl"})
    by_label = {ln[4]: ln[2] for ln in figures[0][0]["lines"] if not ln[4].startswith("_")}
    assert by_label["generator=gmm, objective=fkl"] == by_label["generator=mdn, objective=fkl"] == \
        plots.OBJECTIVE_COLORS["fkl"]
    assert by_label["generator=gmm, objective=rkl"] == plots.OBJECTIVE_COLORS["rkl"]
    assert figures[1][0]["lines"][0][2] == plots.OBJECTIVE_COLORS["fkl"]


def test_a_mass_band_never_goes_below_zero_and_facets_are_generators(tmp_path: Path, figures: list) -> None:
    t = np.array([0.0, 10, 20])
    runs = [(t, np.array([0.5, 0.01, 0.0])), (t, np.array([0.5, 0.2, 0.0])), (t, np.array([0.5, 0.0, 0.0]))]
    panels = {"gmm": {("fkl", "Delta=3"): {"runs": runs, "theory": (t, [0.5, 0.1, 0.0]), "final": 0.0}},
              "mdn": {("fkl", "Delta=3"): {"runs": runs, "theory": None, "final": 0.02}}}
    assert is_png(plots.plot_facets(panels, tmp_path / "f.png", key="old_mass"))
    axes = figures[0]
    assert [a["title"] for a in axes] == ["gmm", "mdn"]
    assert all(v[:, 1].min() >= 0 for a in axes for v in a["fills"])  # the t-band alone would reach -0.2
    assert any(ln[3] == "--" for ln in axes[0]["lines"])  # the prediction's curve
    assert any(ln[4] == "_child" or ln[1].tolist() == [0.02] for ln in axes[1]["lines"])  # its end value


def test_method_figures_draw_their_predicted_lines(tmp_path: Path, figures: list) -> None:
    t = np.array([0.0, 50, 100])
    curves = {"sdft": {"step": t, "old_mass": np.array([0.2, 0.35, 0.45]), "new_error": np.array([1.0, 0.3, 0.1])}}
    plots.plot_method_comparison(curves, tmp_path / "m.png", theory={"sdft": {"old_mass": 0.5}})
    lines = figures[0][0]["lines"]
    dashed = [ln for ln in lines if ln[3] == "--"]
    assert dashed and dashed[0][2] == lines[0][2] == plots.OBJECTIVE_COLORS["sdft"]
    assert list(dashed[0][1]) == [0.5, 0.5]
