"""Report grouping by the settings a run used: group options as chosen, defaults filled in, every numeric field a
metric, forgetting against the target, key=value options, experiment figures and human labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ptforget import report
from ptforget.labels import label_of
from tests.report.conftest import is_png

BASE = {"task": {"_target_": "ptforget.tasks.TwoModeTask", "dim": 1, "delta": 4.0, "beta_star": 0.5, "beta0": None,
                 "new_offset": 1.0},
        "objective": {"_target_": "ptforget.objectives.ForwardKL", "batch": 256},
        "trainer": {"max_steps": 100}, "seed": 0, "seeds": 1, "study": "default",
        "paths": {"output_dir": "outputs", "cache_dir": ".cache"}, "logger": {"kind": "none"}}
FLOW = {"_target_": "ptforget.generators.Flow", "kind": "nsf", "transforms": 4, "cache_dir": "/a/.cache"}
REALNVP = {"_target_": "ptforget.generators.Flow", "kind": "realnvp", "transforms": 4, "cache_dir": "/b/.cache"}


def _config(generator: dict, **top) -> dict:
    cfg = json.loads(json.dumps(BASE))
    cfg["generator"] = dict(generator)
    for key, value in top.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _run(path: Path, overrides: list[str], config: dict, choices: dict, seed: int, old_mass: float,
         in_summary: bool, generator_class: str = "Flow", extremes: dict | None = None) -> None:
    """A run folder as ptforget-train writes it: the config and choices in the summary (new runs) or only in
    Hydra's .hydra/ files (runs written before summaries recorded them)."""
    path.mkdir(parents=True)
    config = {**config, "seed": seed}
    extremes = extremes or {"old_mass": {"first": 0.5, "last": old_mass, "min": old_mass, "max": 0.5},
                            "drift": {"first": 0.0, "last": 0.1, "min": 0.0, "max": 0.3 + seed}}
    s = {"status": "complete", "reason": "", "seed": seed, "config_hash": f"h{seed}{old_mass}",
         "generator": generator_class, "objective": "rkl", "steps": 100, "max_steps": 100, "wall_time_s": 1.0 + seed,
         "final": {"old_mass": old_mass, "drift": 0.1}, "extremes": extremes,
         "forgetting": {"old_mass_max_minus_last": extremes["old_mass"]["max"] - old_mass}, "pretrain": {},
         "overrides": overrides}
    if in_summary:
        s.update(config=config, choices=choices)
    else:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
            {"hydra": {"runtime": {"choices": {**choices, "hydra/launcher": "basic"}}}}))
    (path / "summary.json").write_text(json.dumps(s))
    (path / "trajectory.csv").write_text(f"step,old_mass,drift\n0,0.5,0.0\n100,{old_mass},0.1\n")


CHOICES = {"task": "two_mode", "objective": "rkl", "optimizer": "adam", "paths": "default", "logger": "none"}


@pytest.mark.parametrize("in_summary", [True, False], ids=["summary", "hydra-files"])
def test_flow_and_realnvp_are_two_rows(tmp_path: Path, in_summary: bool) -> None:
    # ptforget-train -m generator=flow,realnvp: both summaries name the class Flow; the choice tells them apart
    for i, (name, gen) in enumerate((("flow", FLOW), ("realnvp", REALNVP))):
        _run(tmp_path / str(i), [f"generator={name}", "objective=rkl"], _config(gen),
             {**CHOICES, "generator": name}, 0, 0.4 + 0.1 * i, in_summary)
    rows = report.collect(tmp_path)
    assert [r["generator"] for r in rows] == ["flow", "realnvp"]
    assert {r["generator_class"] for r in rows} == {"Flow"}
    # generator.kind and generator.cache_dir differ too, but the option already names the difference
    assert report.swept_keys(rows) == ["generator"]
    agg = report.aggregate(rows, metrics=["old_mass"])
    assert [(a["generator"], a["n"]) for a in agg] == [("flow", 1), ("realnvp", 1)]


def test_a_key_that_varies_within_one_option_stays_a_column(tmp_path: Path) -> None:
    for i, (name, gen, transforms) in enumerate((("flow", FLOW, 2), ("flow", FLOW, 4), ("realnvp", REALNVP, 4))):
        _run(tmp_path / str(i), [f"generator={name}", f"generator.transforms={transforms}"],
             _config({**gen, "transforms": transforms}), {**CHOICES, "generator": name}, 0, 0.4, True)
    assert report.swept_keys(report.collect(tmp_path)) == ["generator", "generator.transforms"]


def test_two_sweeps_of_one_config_sharing_a_folder_give_one_row(tmp_path: Path) -> None:
    # sweep a: `-m objective=fkl seed=0,1,2,3`; sweep b: `-m objective=fkl task.delta=4 study=my_sweep seed=0,1,2`:
    # task.delta=4 is the default, and the study does not change a result
    for seed in range(4):
        _run(tmp_path / "a" / str(seed), ["objective=fkl", f"seed={seed}"], _config(FLOW),
             {**CHOICES, "objective": "fkl", "generator": "flow"}, seed, 0.1, in_summary=False)
    for seed in range(3):
        _run(tmp_path / "b" / str(seed), ["objective=fkl", "task.delta=4", "study=my_sweep", f"seed={seed}"],
             _config(FLOW, study="my_sweep"), {**CHOICES, "objective": "fkl", "generator": "flow"}, seed, 0.1,
             in_summary=True)
    rows = report.collect(tmp_path)
    assert report.swept_keys(rows) == []
    agg = report.aggregate(rows, metrics=["old_mass"])
    assert len(agg) == 1 and agg[0]["n"] == 7
    assert all(r["task.delta"] == 4.0 for r in rows)  # the default filled in where it was not typed


def test_every_numeric_field_is_a_metric_and_forgetting_is_against_the_target(tmp_path: Path) -> None:
    # rkl at Delta=2 from a model with excess old mass: it loses mass toward p*, which is not forgetting
    cfg = _config(FLOW, **{"task.delta": 2.0})
    _run(tmp_path / "0", ["task.delta=2"], cfg, {**CHOICES, "generator": "flow"}, 0, 0.55, in_summary=True,
         extremes={"old_mass": {"first": 0.72, "last": 0.55, "min": 0.55, "max": 0.72}})
    row = report.collect(tmp_path)[0]
    assert row["old_mass_max_minus_last"] == pytest.approx(0.17)
    assert row["old_mass_max"] == pytest.approx(0.72) and row["wall_time_s"] == 1.0
    # the old Bayes region of p* = 0.5 N(-1, 1) + 0.5 N(1, 1) is x < 0, with mass exactly 0.5
    assert row["target_old_mass"] == pytest.approx(0.5, abs=1e-6)
    assert row["old_mass_deficit"] == pytest.approx(-0.05, abs=1e-6)  # more old mass than the target: none lost
    res = report.write_report(tmp_path, tmp_path / "rep", figures=False)
    assert "old_mass_deficit" in res["metrics"] and "old_mass_max_minus_last" not in res["metrics"]


def test_key_value_metrics_and_by(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, (name, gen) in enumerate((("flow", FLOW), ("realnvp", REALNVP))):
        for seed in range(2):
            _run(tmp_path / f"{i}{seed}", [f"generator={name}"], _config(gen), {**CHOICES, "generator": name}, seed,
                 0.4 + 0.1 * i, True)
    out = tmp_path / "o"
    assert report.main([str(tmp_path), "metrics=[old_mass,drift_max]", f"out={out}", "figures=false"]) == 0
    text = capsys.readouterr().out
    assert "| generator | n | old_mass | drift_max |" in text
    assert "| flow | 2 | 0.4 ± 0 | 0.8 ± " in text  # drift max 0.3 and 1.3 over the two seeds
    assert report.main([str(tmp_path), "metrics=[nope]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' is not a metric" in err and "drift_max" in err
    assert report.main([str(tmp_path), "colour=red"]) == 2
    assert "not an option of ptforget-report" in capsys.readouterr().err


def test_drift_vs_separation_report_draws_the_sup_drift_against_delta(tmp_path: Path) -> None:
    for i, delta in enumerate((2.0, 4.0, 6.0)):
        for seed in range(2):
            ext = {"comp_drift": {"first": 0.0, "last": 0.1, "min": 0.0, "max": 2.0 / delta + 0.01 * seed},
                   "old_mass": {"first": 0.5, "last": 0.5, "min": 0.5, "max": 0.5}}
            _run(tmp_path / f"{i}{seed}", ["experiment=drift_vs_separation", f"task.delta={delta}"],
                 _config(FLOW, **{"task.delta": delta}), {**CHOICES, "generator": "gmm",
                                                           "experiment": "drift_vs_separation"}, seed, 0.5, True,
                 extremes=ext)
    res = report.write_report(tmp_path, tmp_path / "rep")
    assert res["experiment"] == "drift_vs_separation" and res["by"] == ["task.delta"]
    assert res["metrics"][0] == "comp_drift_max"
    names = [p.name for p in res["figures"]]
    assert "final_comp_drift_max_vs_task.delta.png" in names and "final_old_mass_vs_task.delta.png" not in names
    assert all(is_png(p) for p in res["figures"])


def test_labels_are_human() -> None:
    assert label_of("old_mass") == "old-region mass"
    assert label_of("comp_drift").startswith("old-component drift")
    assert label_of("drift_max") == "old-core drift since the start, max over the run"
    assert label_of("task.delta").startswith("separation")
    assert label_of("no_such_key") == "no_such_key"


def test_report_settings_leave_out_what_the_run_hash_leaves_out() -> None:
    from ptforget.train import NON_RESULT_KEYS

    assert set(NON_RESULT_KEYS) <= set(report.NOT_SETTINGS)
