"""The abstract's consequences (P7r, P10m, P13c) on a tiny profile: every row produced, declared with a rival, a
margin, a wrong theory and a convergence reading, and its values finite where the row is judged."""

from __future__ import annotations

import math

import pytest

from ptforget.check import run_check
from ptforget.check.rules import THEORY_VERDICTS
from tests.check.conftest import check_config, train_compose

#: plain SGD runs short enough for a test (the claims' own grids kept small)
SHORT = ["profile.families.gmm.sgd.steps=120", "profile.families.mdn.sgd.steps=120",
         "profile.families.gmm.sgd.batch=4096", "profile.families.mdn.sgd.batch=1024", "profile.families.gmm.seeds=3"]


def _rows(payload, claim):
    rows = [v for v in payload["verdicts"] if v["claim"] == claim]
    for v in rows:
        assert v["kind"] == "theory" and v["verdict"] in THEORY_VERDICTS
        assert v["rival"]["name"] and math.isfinite(v["rival"]["predicted"]) and v["margin_why"]
        assert v["margin"] > 0 and v["converged"] is not None and v["convergence"]
        assert math.isfinite(v["predicted"]) and v["predicted"] != v["rival"]["predicted"]
    return rows


@pytest.mark.slow
def test_the_kl_rate_rows(tmp_path):
    payload = run_check(check_config("claims=[P7r]", "executor=inline", "generators=[gmm,mdn]",
                                     "profile.rate_betas=[0.5]", *SHORT), tmp_path, train_compose)
    rows = _rows(payload, "P7r")
    assert sorted(v["family"] for v in rows) == ["gmm", "mdn"]
    gmm = next(v for v in rows if v["family"] == "gmm")
    assert gmm["n"] == 3 and all(math.isfinite(x) for x in gmm["values"]) and gmm["converged"]
    assert all(x < 0 for x in gmm["values"])  # the KL falls
    assert gmm["predicted"] < 0 and gmm["rival"]["predicted"] < 0


@pytest.mark.slow
def test_the_drift_through_misassignment_rows(tmp_path):
    payload = run_check(check_config("claims=[P10m]", "executor=inline", "generators=[gmm,mdn]",
                                     "profile.deltas=[3.0,4.0,5.0]", *SHORT), tmp_path, train_compose)
    rows = _rows(payload, "P10m")
    assert sorted(v["family"] for v in rows) == ["gmm", "mdn"]
    gmm = next(v for v in rows if v["family"] == "gmm")
    assert gmm["gate"] is None and all(math.isfinite(x) and x > 0 for x in gmm["values"])
    assert 0.3 < gmm["predicted"] < 1.0  # the exact flow's slope


@pytest.mark.slow
def test_the_starvation_consequence_rows(tmp_path):
    payload = run_check(check_config("claims=[P13c]", "executor=inline", "generators=[gmm]",
                                     "profile.starvation_batches=[2,8]", *SHORT), tmp_path, train_compose)
    rows = _rows(payload, "P13c")
    assert len(rows) == 5 and {v["family"] for v in rows} == {"gmm"}
    assert sorted({round(v["predicted"], 12) for v in rows}) == pytest.approx(
        [math.log(0.7 * 0.95), math.log(0.95), 0.0])  # ln f of replay, of on-policy; fixed slots: no dip
    for v in rows:  # judged on finite values, or untestable with the premise that failed
        assert (v["gate"] is None and v["n"] == 3) or (v["verdict"] == "untestable" and (
            "no starvation effect" in v["gate"] or "start" in v["gate"]))
