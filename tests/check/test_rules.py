"""Rules render their own text from their bounds and judge a t-interval over seeds; one statistics module."""

import math

import pytest

from ptforget.check import rules
from ptforget.stats import summarize


def test_summary_of_one_value_has_no_interval():
    s = summarize([0.3])
    assert s.n == 1 and s.mean == 0.3 and s.lo is None and s.hi is None and not s.has_interval
    s = summarize([1.0, 2.0, 3.0, float("nan")])
    assert s.n == 3 and s.mean == 2.0
    assert s.hi - s.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, df=2) * sd / sqrt(n)


@pytest.mark.parametrize(("values", "rule", "verdict"), [
    ([0.50, 0.51, 0.49], rules.near(0.5, 0.05, "r"), "holds"),
    ([0.70, 0.71, 0.69], rules.near(0.5, 0.05, "r"), "fails"),
    ([0.40, 0.55, 0.60], rules.near(0.5, 0.05, "r"), "inconclusive"),
    ([0.01, 0.012, 0.011], rules.at_most(0.05, "r"), "holds"),
    ([0.01], rules.at_most(0.05, "r"), "inconclusive"),          # one noisy value is not evidence
    ([0.01], rules.at_most(0.05, "r", exact=True), "holds"),     # a deterministic computation is
    ([0.2], rules.at_most(0.05, "r", exact=True), "fails"),
    ([float("nan")] * 3, rules.between(0, 1, "r"), "inconclusive"),
    ([1.9, 2.0, 2.1], rules.relative(2.0, 0.25, "r"), "holds"),
    ([0.74, 0.75, 0.76], rules.relative(2.0, 0.25, "r"), "fails"),
    ([-0.9, -0.8, -0.85], rules.relative(-0.88, 0.2, "r"), "holds"),
])
def test_judge(values, rule, verdict):
    assert rule.judge(summarize(values)) == verdict


def test_rule_text_comes_from_its_bounds():
    r = rules.near(0.1918, 0.0123, "3 x the measured noise floor")
    assert r.bounds == (0.1918 - 0.0123, 0.1918 + 0.0123)
    assert r.text() == "within 0.0123 of 0.1918 (3 x the measured noise floor)"
    assert r.predicted == 0.1918
    rel = rules.relative(-1.0, 0.1, "a relative band")
    assert rel.bounds == (-1.1, -0.9) and rel.text().startswith("within 10% of -1")
    assert rules.at_least(0.0, "x").text() == ">= 0 (x)" and rules.at_least(0.0, "x").predicted is None
    assert rules.at_most(0.05, "y").bounds == (-math.inf, 0.05)


def test_resolution_band_is_twice_the_half_width_floored_and_capped_by_the_gap():
    from ptforget.stats import t_quantile

    vals = [0.50, 0.52, 0.48, 0.51, 0.49]
    s = summarize(vals)
    half = t_quantile(0.975, 4) * s.std / math.sqrt(5)
    r = rules.resolution(0.5, vals)
    assert r.bounds == pytest.approx((0.5 - 2 * half, 0.5 + 2 * half)) and r.judge(summarize(vals)) == "holds"
    # seeds agreeing to far less than 1% of the distance travelled cannot matter: the floor
    tight = [0.5, 0.5000001, 0.4999999]
    assert rules.resolution(0.5, tight, gap=0.3).bounds == pytest.approx((0.497, 0.503))
    # a noisy experiment is not easier to pass: the band is at most a quarter of the gap, so it is inconclusive
    noisy = [0.26, 0.14, 0.14]
    assert rules.resolution(0.1325, noisy).judge(summarize(noisy)) == "holds"
    capped = rules.resolution(0.1325, noisy, gap=0.37)
    assert capped.bounds == pytest.approx((0.1325 - 0.0925, 0.1325 + 0.0925))
    assert capped.judge(summarize(noisy)) == "inconclusive" and "quarter of the gap" in capped.text()
    # and a wrong prediction with tight seeds still fails
    assert rules.resolution(0.3, vals, gap=0.3).judge(summarize(vals)) == "fails"


def _result(spec, values):
    from pathlib import Path

    from ptforget.check.runs import Result, Run

    return Result(spec, Path("."), [Run(Path("."), {"final": {"m": v}}, {}) for v in values])


@pytest.mark.parametrize(("main", "longer", "says"), [
    ([0.600, 0.601, 0.602], [0.635, 0.636, 0.637], "fell from"),     # closer with more steps: not converged
    ([0.600, 0.601, 0.602], [0.55, 0.551, 0.552], "grew from"),       # farther: settles elsewhere
    ([0.60, 0.61, 0.62], [0.60, 0.615, 0.62], "stayed at"),           # within the intervals: settles where it is
])
def test_a_longer_run_control_says_what_it_measured(main, longer, says):
    from ptforget.check.claims.common import longer_run
    from ptforget.check.runs import RunSpec

    spec = RunSpec("x", "gmm", ("trainer.max_steps=100",))
    e = longer_run(spec, 200, "m", target=0.64)
    ctrl, orig = e.runs
    assert orig == spec
    assert says in e.describe({ctrl: _result(ctrl, longer), spec: _result(spec, main)})
    # without the row's prediction the control only reports its value
    bare = longer_run(spec, 200, "m")
    assert bare.runs == [ctrl] and "error" not in bare.describe({ctrl: _result(ctrl, longer)})
