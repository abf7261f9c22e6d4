"""ptforget-check dry_run=true: the plan with estimated seconds per claim and in total, from the families' declared
step costs; nothing trains."""

from __future__ import annotations

import math
import subprocess

import pytest

from ptforget.check import selected_claims
from ptforget.check.context import Context
from ptforget.check.plan import RUN_OVERHEAD_S, estimate, job_seconds, make_plan
from ptforget.generators import GaussianMixture
from tests.check.conftest import TINY, check_config, train_compose
from tests.check.test_cli import CHECK, _env


def test_job_seconds_follow_the_family_s_declared_step_cost():
    """A batched GMM run: steps x (fixed + per-sample x members x batch) + evaluations, from GaussianMixture's
    StepCost, with the objective's batch and the run's evaluation count."""
    cfg = train_compose(["generator=gmm", "objective=rkl", "objective.batch=128", "trainer.max_steps=100",
                         "eval_every=30", "seeds=4"])
    c = GaussianMixture.step_cost
    evals = math.ceil(100 / 30) + 1
    want = RUN_OVERHEAD_S + 100 * (1e-3 * c.fixed_ms + 1e-6 * c.per_sample_us * 4 * 128) + evals * 1e-3 * c.eval_ms / 2
    assert abs(job_seconds(cfg, 4) - want) < 1e-9


def test_each_job_is_counted_once_and_the_wall_time_is_packed(tmp_path):
    """Claims sharing runs: every unfinished job counts under one claim only, the claims add up to the total, and
    the wall time on 2 workers lies between half the total and the total."""
    cfg = check_config("claims=[P10,P14]")
    plan = make_plan(Context(cfg, tmp_path, train_compose), selected_claims(cfg))
    est = estimate(plan, workers=2)
    assert est["jobs"] == len(plan.jobs)
    assert abs(sum(r["seconds"] for r in est["claims"].values()) - est["train_s"]) < 1e-6
    assert abs(est["train_s"] - sum(j.cost for j in plan.jobs)) < 1e-6
    assert est["claims"]["P14"]["shared"] > 0  # P14 reuses P10's reverse-KL runs
    longest = max(j.cost for j in plan.jobs)
    pre = est["pretrain_s"]
    assert max(est["train_s"] / 2, longest) - 1e-6 <= est["wall_s"] <= est["train_s"] + pre + 1e-6


@pytest.mark.slow
def test_dry_run_prints_the_estimate_and_trains_nothing(tmp_path):
    out = tmp_path / "dry"
    p = subprocess.run([*CHECK, *TINY, "claims=[P1,P10]", "dry_run=true", f"hydra.run.dir={out}"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert any(line.startswith("P1 ") for line in lines) and any(line.startswith("P10 ") for line in lines)
    assert "estimated wall time on" in p.stdout
    assert (out / "plan.json").is_file()
    assert not list(out.rglob("summary.json")) and not (out / "verdicts.json").exists()
    bad = subprocess.run([*CHECK, "dry_run=maybe", f"hydra.run.dir={tmp_path / 'bad'}"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "dry_run" in bad.stderr
