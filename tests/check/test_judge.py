"""Discriminations: the theory against a named rival at a declared margin, the error rates of the two-sided decision,
the pilot's power, the gates, the negative control and the robust statistics behind the replication rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ptforget.check import Rival, Row, discriminate
from ptforget.check.claims.reverse_kl import bc_curvature_rule, quad_coef
from ptforget.check.gates import DEFAULTS, plateau, start_record
from ptforget.check.judge import Settings, judge_row
from ptforget.check.runs import Result, Run, RunSpec
from ptforget.stats import rank_test, wilson_interval
from tests.check.conftest import check_config, train_compose

RULE = discriminate(1.0, Rival("nothing moves", 0.0, "a test rival"), margin=0.25, margin_why="a test margin",
                    wrong=0.5)


def _row(values, rule=RULE, **kw) -> Row:
    return Row("r", "gmm", "theory", "s", "x", values, rule, **kw)


@pytest.mark.parametrize(("values", "verdict"), [
    ([0.98, 1.0, 1.02, 0.99, 1.01], "supports theory"),
    ([0.02, 0.0, -0.01, 0.01, -0.02], "supports rival"),
    ([0.5, 0.52, 0.48, 0.51, 0.49], "undecided"),     # between the bands: neither
    ([0.2, 1.4, 0.9, 0.1, 1.6], "undecided"),         # too noisy: no power
])
def test_the_two_sided_decision(values, verdict):
    assert judge_row(_row(values), "").verdict == verdict


def test_gates_come_before_the_decision():
    good = [0.98, 1.0, 1.02]
    assert judge_row(_row(good, gate="start is not q0"), "").verdict == "untestable"
    assert judge_row(_row(good, converged=False, convergence="still moving"), "").verdict == "not converged"
    assert judge_row(_row(good[:2]), "").verdict == "undecided"  # n < 3 is never evidence


def test_a_theory_row_without_a_rival_is_refused():
    from ptforget.check import near

    with pytest.raises(TypeError, match="rival"):
        judge_row(_row([1.0, 1.0, 1.0], near(1.0, 0.1, "no rival")), "")
    with pytest.raises(ValueError, match="rival"):
        discriminate(1.0, [])


def test_error_rates_and_power_on_synthetic_seeds():
    """Seeds drawn under the theory never support the rival more often than 5%, nor under the rival the theory;
    the power formula matches the simulated rate of 'supports theory'."""
    rng = np.random.default_rng(0)
    n, sd, trials = 8, 0.25, 3000
    rates = {}
    for truth in (1.0, 0.0):
        got = [judge_row(_row(list(truth + sd * rng.standard_normal(n))), "").verdict for _ in range(trials)]
        rates[truth] = {v: got.count(v) / trials for v in set(got)}
    assert rates[1.0].get("supports rival", 0) <= 0.05 and rates[0.0].get("supports theory", 0) <= 0.05
    power = RULE.power(sd / math.sqrt(n), n)
    se_mc = math.sqrt(power * (1 - power) / trials)
    # the formula treats s as sigma (a normal approximation): allow that small-sample difference besides MC error
    assert 0.5 < power < 0.8 and abs(rates[1.0].get("supports theory", 0) - power) < 4 * se_mc + 0.05
    assert RULE.seeds_needed(sd) is not None and RULE.power(sd / math.sqrt(RULE.seeds_needed(sd)),
                                                            RULE.seeds_needed(sd)) >= 0.8


def test_an_underpowered_row_is_deferred_by_its_pilot():
    from ptforget.check.judge import pilot_key

    pilot = {pilot_key("", "gmm", "r", "s", "x"): {"se": 0.5, "n": 3}}
    v = judge_row(_row([0.98, 1.0, 1.02]), "", Settings(pilot=pilot, defer=True))
    assert v.verdict == "undecided" and v.deferred and v.power < 0.8 and "deferred" in v.detail
    small = {pilot_key("", "gmm", "r", "s", "x"): {"se": 0.01, "n": 3}}
    v = judge_row(_row([0.98, 1.0, 1.02]), "", Settings(pilot=small, defer=True))
    assert v.verdict == "supports theory" and v.power > 0.8


def test_the_negative_control_judges_the_wrong_theory():
    v = judge_row(_row([0.98, 1.0, 1.02, 0.99]), "", Settings(negative_control=True))
    assert v.negative_control and v.predicted == 0.5 and v.verdict != "supports theory"


def test_the_curvature_test_tells_bc_from_its_rivals():
    dmin = np.array([2.0, 3.0, 4.0, 5.0])
    rule = bc_curvature_rule(dmin)
    assert -0.16 < rule.theory < -0.125 and rule.rivals[0].predicted == 0.0 and rule.rivals[1].predicted > 0
    bc = [quad_coef(dmin, np.log(np.exp(-dmin**2 / 8) * np.sqrt(1 + dmin**2 / 4)) + e) for e in (0, 1e-3, -1e-3)]
    exp = [quad_coef(dmin, -0.6 * dmin + e) for e in (0, 1e-3, -1e-3)]
    assert judge_row(_row(bc, rule), "").verdict == "supports theory"
    assert judge_row(_row(exp, rule), "").verdict == "supports rival"


def _run(tmp: Path, steps, col, start=None) -> Run:
    return Run(tmp, {"start": start}, {"step": np.asarray(steps, float), "x": np.asarray(col, float)})


def test_plateau_gate_sees_a_moving_statistic(tmp_path):
    t = np.arange(0, 101, 10)
    flat = [_run(tmp_path, t, 1 + 0.001 * np.sin(t)) for _ in range(3)]
    moving = [_run(tmp_path, t, 0.01 * t) for _ in range(3)]
    assert plateau(flat, "x", 0.25, DEFAULTS)[0]
    ok, why = plateau(moving, "x", 0.25, DEFAULTS)
    assert not ok and "moved 0.2 " in why  # the trend over the last quarter (steps 80-100) moved it 0.2


def test_start_gate_reads_the_runs_start(tmp_path):
    good = {"kl_q0": 0.001, "kl_q0_se": 0.0, "old_mass": 0.5, "old_mass_q0": 0.5, "method": "quadrature"}
    bad = {**good, "kl_q0": 0.2, "old_mass": 0.55}
    res = Result(RunSpec("a"), tmp_path, [_run(tmp_path, [0], [0], good), _run(tmp_path, [0], [0], bad)])
    rec = start_record(res, DEFAULTS)
    assert not rec["passes"] and "KL(q0 || start) = 0.2" in rec["why"] and "10.0% > 1%" in rec["why"]
    assert start_record(Result(RunSpec("a"), tmp_path, [_run(tmp_path, [0], [0], good)]), DEFAULTS)["passes"]


def test_start_fidelity_against_monte_carlo():
    """KL(q0 || model) by quadrature (1-D) equals a Monte-Carlo estimate; a model at q0 scores 0."""
    from ptforget.generators import GaussianMixture
    from ptforget.metrics import start_fidelity
    from ptforget.tasks import TwoModeTask

    task = TwoModeTask(dim=1, delta=4.0, beta_star=0.5, beta0=0.3, new_offset=1.0)
    gen = GaussianMixture(task)
    (at_q0,) = start_fidelity(gen, task)
    assert at_q0["kl_q0"] < 1e-6 and abs(at_q0["old_mass"] - at_q0["old_mass_q0"]) < 1e-6
    with torch.no_grad():
        gen.mu_old.add_(0.3)
    (moved,) = start_fidelity(gen, task)
    torch.manual_seed(0)
    x = task.sample("q0", 400_000)
    with torch.no_grad():
        d = (task.log_prob("q0", x) - gen.log_prob(x)).double()
    assert abs(moved["kl_q0"] - float(d.mean())) < 4 * float(d.std()) / math.sqrt(len(d)) + 1e-4
    assert moved["kl_q0"] > 0.005


def test_rank_test_and_wilson_interval_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 1, 40), rng.normal(0, 1, 50)
    rt = rank_test(a, b)
    ref = scipy_stats.mannwhitneyu(a, b, alternative="greater", use_continuity=True, method="asymptotic")
    assert rt["U"] == pytest.approx(ref.statistic) and rt["p_greater"] == pytest.approx(ref.pvalue, rel=1e-6)
    assert rt["shift"] == pytest.approx(np.median(np.subtract.outer(a, b)))
    lo, hi = wilson_interval(3, 20)
    ci = scipy_stats.binomtest(3, 20).proportion_ci(method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-6)


def test_a_check_under_the_negative_control_supports_no_wrong_theory(tmp_path):
    """The negative control on a subset: a deliberately wrong theory (the rivals unchanged) is never supported."""
    from ptforget.check import run_check

    cfg = check_config("claims=[P1,P5,P6]", "executor=inline", "generators=[gmm]", "negative_control=true",
                       "profile.families.gmm.steps=400")
    payload = run_check(cfg, tmp_path, train_compose)
    rows = [v for v in payload["verdicts"] if v["kind"] == "theory"]
    assert rows and all(v["negative_control"] for v in rows)
    assert not [v for v in rows if v["verdict"] == "supports theory"]
    assert "Negative control" in (tmp_path / "report.md").read_text()
    honest = run_check(check_config("claims=[P1,P5,P6]", "executor=inline", "generators=[gmm]",
                                    "profile.families.gmm.steps=400"), tmp_path / "honest", train_compose)
    assert any(v["verdict"] == "supports theory" for v in honest["verdicts"] if v["kind"] == "theory")


def test_a_row_that_had_not_converged_is_judged_on_its_continuation(tmp_path, registry_guard):
    from ptforget.check import claim, run_check
    from ptforget.check.claims.common import longer_run

    spec = RunSpec("toy_rkl_short", "gmm", ("objective=rkl", "task.dim=1", "trainer.max_steps=60"))

    @claim("TOY3", "A claim whose first run is too short", runs=[spec])
    def toy3(ctx, got):
        res = got[spec]
        steps = int(res.runs[0].steps[-1])
        yield Row("toy row", "gmm", "theory", "dim 1", "final old weight", res.values("weight"),
                  discriminate(0.5, Rival("forgets", 0.0, "a test rival"), margin=0.2, margin_why="a test band"),
                  converged=steps >= 120, convergence=f"{steps} steps",
                  explain=longer_run(spec, 120, "weight", target=0.5))

    payload = run_check(check_config("claims=[TOY3]", "executor=inline"), tmp_path, train_compose)
    (row,) = [v for v in payload["verdicts"] if v["claim"] == "TOY3"]
    assert row["verdict"] == "supports theory" and row["converged"] is True
    assert "Judged on its continuation" in row["note"] and "60 steps" in row["note"]


def test_a_collapsed_seed_is_a_rate_not_part_of_the_mean():
    values = [0.98, 1.0, 1.02, 0.99, 0.02]  # one seed lost its old mode
    assert judge_row(_row(values), "").verdict == "undecided"  # averaged in, the collapse hides the answer
    v = judge_row(_row(values, collapsed=[x < 0.1 for x in values]), "")
    assert v.verdict == "supports theory" and v.n == 4
    c = v.extra["collapse"]
    assert (c["collapsed"], c["seeds"]) == (1, 5) and 0 < c["lo"] < 0.2 < 0.6 < c["hi"] and "1 of 5" in v.note


def test_a_pilot_on_other_seeds_trains_other_runs(tmp_path):
    """``seed_offset`` moves every run to other seeds (the pilot behind the rows' power is independent of them)."""
    from ptforget.check import registry
    from ptforget.check.context import Context
    from ptforget.check.plan import make_plan

    plans = {off: make_plan(Context(check_config("generators=[gmm]", f"seed_offset={off}"), tmp_path, train_compose),
                            registry.ordered(["P6"])) for off in (0, 1000)}
    (spec,) = plans[0].claims["P6"]
    assert plans[0].layout[spec][1] == [0, 1, 2] and plans[1000].layout[spec][1] == [1000, 1001, 1002]
    assert {j.key for j in plans[0].jobs}.isdisjoint({j.key for j in plans[1000].jobs})


def test_judging_a_row_twice_gives_the_same_verdict():
    """A claim's own table may judge a row before the engine does: judging never changes the row."""
    values = [0.98, 1.0, 1.02, 0.99, 0.02]
    row = _row(values, collapsed=[x < 0.1 for x in values])
    first, second = judge_row(row, ""), judge_row(row, "")
    assert first.verdict == second.verdict == "supports theory" and first.note == second.note
    assert list(row.values) == values
