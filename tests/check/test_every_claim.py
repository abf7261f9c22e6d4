"""One looped test over every registered claim (as zuko loops one property test over every transform): on a tiny
profile, each claim's rows are produced, their values finite, every theory row carries a rival, a margin with its
reason, a convergence flag and one of the five verdicts, and the claim's figures are written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ptforget.check import registry, run_check
from ptforget.check.judge import KIND_VERDICTS
from tests.check.conftest import check_config, train_compose

#: a tiny profile for every claim: few seeds, short runs, a small grid (the claims' own fixed lengths still apply)
EVERY = ["generators=[gmm,mdn]", "executor=inline", "profile.chen_seeds=4", "profile.deltas=[2.5,3.0,3.5,4.0]",
         "profile.method_deltas=[2.5,3.0,3.5,4.0]", "profile.batch_sizes=[4]", "profile.replay_lambdas=[0.3]",
         "profile.families.gmm.sgd.steps=60", "profile.families.mdn.sgd.steps=60",
         "profile.families.gmm.sgd.batch=2048", "profile.families.mdn.sgd.batch=512", "profile.control_factor=1.5"]


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    out = tmp_path_factory.mktemp("every")
    return out, run_check(check_config(*EVERY), out, train_compose)


@pytest.mark.slow
@pytest.mark.parametrize("claim", [c.id for c in registry.ordered()])
def test_every_claim_produces_rows(payload, claim):
    out, p = payload
    assert not [e for e in p["errors"] if e.startswith(f"{claim}:")], p["errors"]
    rows = [v for v in p["verdicts"] if v["claim"] == claim]
    figures = list((out / "figures").glob("*.png"))
    if claim in ("methods", "density"):  # figure claims: no rows, a figure
        assert figures
        return
    assert rows, f"{claim} produced no rows"
    for v in rows:
        assert v["verdict"] in KIND_VERDICTS[v["kind"]]
        assert v["n"] == 0 or math.isfinite(v["mean"]) or v["verdict"] in ("untestable", "undecided")
        if v["kind"] == "theory":
            assert v["rival"]["name"] and math.isfinite(v["rival"]["predicted"])
            assert v["margin"] is not None and v["margin"] > 0 and v["margin_why"]
            assert v["converged"] in (True, False)
        if v.get("figure"):
            assert (Path(out) / v["figure"]).is_file()
