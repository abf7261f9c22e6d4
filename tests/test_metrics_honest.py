"""Metrics that cannot lie: an empty old core gives NaN with a reason (not a number made of rounding noise), drift
is measured from the run's own start, and intervals never leave a metric's range."""

from __future__ import annotations

import math

import torch

from ptforget.generators import GaussianMixture
from ptforget.generators.base import region_stats
from ptforget.metrics import measure
from ptforget.stats import clipped_ci, mean_ci
from ptforget.tasks import TwoModeTask
from ptforget.train import run_training, undefined_metrics
from tests.conftest import compose_cfg


def _moved(task: TwoModeTask, where: torch.Tensor) -> GaussianMixture:
    gen = GaussianMixture(task)
    with torch.no_grad():
        gen.mu_old.copy_(where)
        gen.mu_rest.copy_(where.expand_as(gen.mu_rest))
    return gen


def test_an_empty_old_core_has_no_location_in_every_view() -> None:
    for dim in (1, 2):  # quadrature (1-D) and Monte Carlo (2-D)
        task = TwoModeTask(dim=dim, delta=8.0)
        gone = measure(_moved(task, task.mu_new), task, 4096)  # all mass 9 units from the core: about 1e-18 of it
        assert math.isnan(float(gone["core_pos"])), (dim, gone["core_pos"])
        assert 0 <= float(gone["old_mass"]) < 1e-4  # the tail of N(mu_n, 1) beyond the midpoint: 3.2e-5
        home = measure(_moved(task, task.mu_old), task, 4096)  # the old mode in place: its core is located
        # E[z | 1 < z < 3] for a standard normal, the exact conditional mean of the slab
        phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        Phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
        exact = (phi(1) - phi(3)) / (Phi(3) - Phi(1))
        assert abs(float(home["core_pos"]) + exact) < (1e-4 if dim == 1 else 0.05), (dim, home["core_pos"])
    task = TwoModeTask(dim=1, delta=8.0)
    w = torch.tensor([0.5, 0.5])
    st = region_stats(w, torch.stack([task.mu_new, task.mu_new]), task.cov.expand(2, 1, 1), task)
    assert math.isnan(float(st["core_pos"]))


def test_a_nan_metric_comes_with_its_reason() -> None:
    nan = float("nan")
    history = [{"step": 0, "core_pos": -1.5}, {"step": 50, "core_pos": nan}, {"step": 100, "core_pos": nan}]
    why = undefined_metrics(history)
    assert set(why) == {"core_pos", "drift"} and "2 of 3 evaluations (first at step 50)" in why["core_pos"]
    assert undefined_metrics(history[:1]) == {}


def test_drift_is_measured_from_the_runs_own_start(tmp_path) -> None:
    """drift(t) = |core_pos(t) - core_pos(0)|: 0 at the start whatever the start's own misfit (q0's new mode here
    sits 1 unit off p*'s, so the old region's mean is off p*'s at step 0: region_drift keeps that absolute value)."""
    from ptforget.io import read_trajectory

    cfg = compose_cfg("generator=gmm", "objective=fkl", "optimizer=sgd", "optimizer.lr=0.05", "task.dim=1",
                      "task.delta=2", "trainer.max_steps=60", "eval_every=20")
    summary = run_training(cfg, tmp_path)
    t = read_trajectory(tmp_path / "trajectory.csv")
    assert t["drift"][0] == 0.0 and t["region_drift"][0] > 0.01
    for core, drift in zip(t["core_pos"], t["drift"], strict=True):
        assert abs(drift - abs(core - t["core_pos"][0])) < 1e-6
    assert t["drift"][-1] > 0.01  # SFT at Delta = 2 does move the old mode
    assert summary["extremes"]["drift"]["first"] == 0.0 and summary["undefined"] == {}


def test_intervals_stay_in_the_metrics_range() -> None:
    values = [0.001, 0.002, 0.09]  # a mass: the plain t-interval goes below 0
    assert mean_ci(values)["lo"] < 0
    st = clipped_ci(values, "old_mass_min")
    assert st["lo"] == 0.0 and st["hi"] == mean_ci(values)["hi"] and st["ci"] == mean_ci(values)["ci"]
    assert clipped_ci([0.97, 0.999, 0.9999], "weight")["hi"] == 1.0
    assert clipped_ci([-1.0, 2.0, 5.0], "core_pos")["lo"] < -1.0  # unbounded: unchanged
