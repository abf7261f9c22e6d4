"""The check's pipeline in-process: a claim declared outside the package, planning, executors, merging."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ptforget.check import Rival, Row, RunSpec, claim, discriminate, near, run_check
from ptforget.check.context import Context
from ptforget.check.plan import make_plan
from ptforget.errors import ConfigError
from tests.check.conftest import check_config, train_compose

TOY = RunSpec("toy_rkl", "gmm", ("objective=rkl", "task.dim=1"))


def _register_toy():
    @claim("TOY1", "A toy claim: reverse KL keeps beta*", runs=[TOY])
    def toy(ctx, got):
        beta = float(ctx.value(TOY, "task.beta_star"))
        yield Row("toy row", "gmm", "theory", "dim 1", "final old weight", got[TOY].values("weight"),
                  discriminate(beta, Rival("forgets", 0.0, "a test rival"), margin=0.1, margin_why="a test band"))

    return toy


def test_a_claim_declared_in_a_test_module_is_reported(tmp_path, registry_guard):
    _register_toy()
    payload = run_check(check_config("claims=[TOY1]", "executor=inline"), tmp_path, train_compose)
    rows = [v for v in payload["verdicts"] if v["claim"] == "TOY1"]
    assert len(rows) == 1 and rows[0]["n"] == 3 and rows[0]["kind"] == "theory" and rows[0]["family"] == "gmm"
    assert rows[0]["rule"] == "theory 0.5 ± 0.1 against rival 'forgets': 0 (margin: a test band)"
    assert rows[0]["rival"] == {"name": "forgets", "predicted": 0.0, "why": "a test rival"}
    assert rows[0]["margin"] == 0.1 and rows[0]["verdict"] == "supports theory"
    assert json.loads((tmp_path / "verdicts.json").read_text())["verdicts"][0]["claim"] == "TOY1"
    report = (tmp_path / "report.md").read_text()
    assert "## TOY1: A toy claim: reverse KL keeps beta*" in report and "toy row" in report
    assert payload["runs_trained"] == 3
    again = run_check(check_config("claims=[TOY1]", "executor=inline"), tmp_path, train_compose)
    assert again["runs_trained"] == 0 and again["runs_reused"] == 3  # a re-launch reuses every finished run


def test_theory_rows_with_fewer_than_three_seeds_are_not_evidence(tmp_path, registry_guard):
    _register_toy()
    payload = run_check(check_config("claims=[TOY1]", "executor=inline", "profile.families.gmm.seeds=2"), tmp_path,
                        train_compose)
    (row,) = payload["verdicts"]
    assert row["n"] == 2 and row["verdict"] == "undecided" and "not evidence" in row["detail"]


def test_plan_deduplicates_runs_by_config_hash(tmp_path):
    from ptforget.check import registry

    cfg = check_config("generators=[gmm]")
    ctx = Context(cfg, tmp_path, train_compose)
    plan = make_plan(ctx, registry.ordered(["P6", "methods"]))  # the method figure reads P6's run
    (p6,) = plan.claims["P6"]
    assert p6 in plan.claims["methods"]  # declared again by the figure, planned once
    keys = [k for s in plan.layout for k in plan.layout[s][2]]
    assert len(plan.jobs) == len(set(keys)) == len(keys)
    p6_jobs = [j for j in plan.jobs if j.key in plan.layout[p6][2]]
    assert len(p6_jobs) == 1 and p6_jobs[0].seeds == 3  # reverse KL: the three seeds train together


def test_configs_of_other_seeds_equal_composing_them(tmp_path):
    """The context composes each spec once and sets seed / seeds on a copy: the same config (and hash) Hydra
    composes from the overrides, so cached and fresh plans name the same run folders."""
    from ptforget.train import config_hash

    calls = []

    def counting(overrides):
        calls.append(list(overrides))
        return train_compose(overrides)

    ctx = Context(check_config(), tmp_path, counting)
    spec = RunSpec("p", "flow", ("objective=ttt_discover", "task.dim=1", "objective.reuse.enabled=true"))
    for seed, seeds in ((0, 1), (2, 1), (0, 3)):
        direct = train_compose(ctx.overrides(spec, seed, seeds))
        got = ctx.config(spec, seed, seeds)
        assert config_hash(got) == config_hash(direct) and (got.seed, got.seeds) == (seed, seeds)
    assert len(calls) == 1 and ctx.config(spec).seeds == 1  # composed once; the base config is not modified


def test_the_contexts_composition_equals_hydras_for_every_claim(tmp_path):
    """Group choices composed once, value overrides applied as Hydra applies them: for a spec of every claim and
    family, the config (and so the run folder's hash) is the one Hydra composes from the same overrides."""
    from ptforget.check import registry
    from ptforget.train import config_hash

    ctx = Context(check_config(), tmp_path, train_compose)
    registry.load_builtin()
    seen = set()
    for c in registry.ordered(None):
        for spec in c.runs(ctx):
            if (c.id, spec.family) in seen:
                continue
            seen.add((c.id, spec.family))
            direct = train_compose(ctx.overrides(spec))
            assert config_hash(ctx.config(spec)) == config_hash(direct), (c.id, spec)
            assert OmegaConf.to_yaml(ctx.config(spec)) == OmegaConf.to_yaml(direct), (c.id, spec)
    assert len(seen) > 30


def test_processes_executor_gives_the_inline_results(tmp_path):
    overrides = ("claims=[P5]", "profile.replay_lambdas=[0.1,0.3]", "generators=[gmm]", "batch_seeds=false")
    inline = run_check(check_config(*overrides, "executor=inline"), tmp_path / "a", train_compose)
    procs = run_check(check_config(*overrides, "executor=processes", "executor.workers=2"), tmp_path / "b",
                      train_compose)
    assert procs["executor"] == "processes (2 workers)" and procs["jobs"] == 6  # one job per seed
    assert [v["values"] for v in procs["verdicts"]] == [v["values"] for v in inline["verdicts"]]


def test_a_partial_relaunch_merges_into_the_fuller_report(tmp_path):
    first = run_check(check_config("claims=[P5,P17]", "executor=inline", "generators=[gmm]"), tmp_path,
                      train_compose)
    assert {v["claim"] for v in first["verdicts"]} == {"P5", "P17"}
    again = run_check(check_config("claims=[P17]", "executor=inline", "generators=[gmm]"), tmp_path, train_compose)
    assert {v["claim"] for v in again["verdicts"]} == {"P5", "P17"}  # P5's rows kept
    assert "kept from the earlier report" in again["merged"]
    assert "Merged:" in (tmp_path / "report.md").read_text()


def test_a_failed_run_is_reported_and_the_other_claims_are_judged(tmp_path, registry_guard):
    bad = RunSpec("diverges", "gmm", ("objective=rkl", "optimizer=sgd", "optimizer.lr=1e30"))

    @claim("TOY2", "A claim whose run cannot be read", runs=[bad])
    def toy2(ctx, got):
        yield Row("never", "gmm", "theory", "", "x", [float(got[bad].runs[0].final["nosuch"])],
                  near(0, 1, "r"))

    _register_toy()
    payload = run_check(check_config("claims=[TOY1,TOY2]", "executor=inline"), tmp_path, train_compose)
    assert [v["claim"] for v in payload["verdicts"]] == ["TOY1"]
    assert payload["errors"] and payload["errors"][0].startswith("TOY2:")
    assert "**Not judged**" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(("override", "key"), [("claims=[P99]", "claims"), ("claims=[]", "claims"),
                                               ("generators=[]", "generators"), ("generators=[nosuch]", "generators.0"),
                                               ("profile.families.gmm.seeds=0", "profile.families.gmm.seeds"),
                                               ("reuse=maybe", "reuse"),
                                               ("strict=maybe", "strict"), ("executor.workers=0", "executor.workers")])
def test_bad_check_config_is_refused(tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        run_check(check_config(override), tmp_path, train_compose)
    assert err.value.key == key
