"""collect / aggregate / write_report / main on hand-written run folders."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from ptforget import report, stats
from tests.report.conftest import FINAL_OLD_MASS, is_png


def _t975_df2() -> float:
    p = 0.975  # closed form of the Student-t quantile for df = 2
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


# ---------------------------------------------------------------------------------------------- t quantile


def test_t_quantile_closed_forms() -> None:
    assert stats.t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)
    assert stats.t_quantile(0.975, 2) == pytest.approx(_t975_df2(), rel=1e-9)
    assert stats.t_quantile(0.5, 7) == 0.0
    assert stats.t_quantile(0.025, 5) == pytest.approx(-stats.t_quantile(0.975, 5), rel=1e-12)


def test_t_quantile_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 41), 2.5, 60, 100, 1000, 1e5]:
        for p in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025):
            assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8, abs=1e-10), (p, df)
    assert stats.t_quantile(0.975, math.inf) == pytest.approx(scipy_stats.norm.ppf(0.975), rel=1e-9)


def test_t_quantile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        stats.t_quantile(0.9, 0)


def test_mean_ci_small_samples() -> None:
    st = stats.mean_ci([0.1, 0.2, 0.4])
    mean = 0.7 / 3
    sd = math.sqrt(((0.1 - mean) ** 2 + (0.2 - mean) ** 2 + (0.4 - mean) ** 2) / 2)
    assert st["n"] == 3
    assert st["mean"] == pytest.approx(mean)
    assert st["std"] == pytest.approx(sd)
    assert st["ci"] == pytest.approx(_t975_df2() * sd / math.sqrt(3))
    assert st["lo"] == pytest.approx(mean - st["ci"]) and st["hi"] == pytest.approx(mean + st["ci"])
    one = stats.mean_ci([0.3, math.nan, None])
    assert one["n"] == 1 and one["mean"] == 0.3 and math.isnan(one["ci"])
    assert stats.mean_ci([])["n"] == 0 and math.isnan(stats.mean_ci([])["mean"])


def test_parse_overrides() -> None:
    got = report.parse_overrides(["task.delta=6", "+x.y=1e-3", "seed=1", "objective=fkl", "quiet=True",
                                  "logger=none", "a=null", "~gone", "hydra.job.chdir=false", "s='6'"])
    assert got == {"task.delta": 6, "x.y": 1e-3, "seed": 1, "objective": "fkl", "quiet": True, "logger": "none",
                   "a": None, "s": "6"}


# ---------------------------------------------------------------------------------------------- collect


def test_collect_rows(sweep: Path) -> None:
    rows = report.collect(sweep)
    assert len(rows) == 13
    assert [r["run"].rsplit("/", 1)[1] for r in rows] == [str(i) for i in range(13)]  # natural order
    r1 = rows[1]  # overrides only in .hydra/overrides.yaml
    assert r1["task.delta"] == 3 and r1["objective"] == "fkl" and r1["seed"] == 1
    assert r1["old_mass"] == pytest.approx(0.2)
    assert r1["old_mass_max_minus_last"] == pytest.approx(0.3)
    assert r1["status"] == "complete" and r1["trainer.max_steps"] == 100
    bad = rows[12]
    assert bad["status"] == "diverged" and bad["diverged_step"] == 40
    assert math.isnan(bad["old_mass"]) and bad["new_error"] == math.inf


def test_collect_unreadable_summary(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text("{not json")
    rows = report.collect(tmp_path)
    assert len(rows) == 1 and rows[0]["status"] == "unreadable" and rows[0]["run"] == "r"


# ---------------------------------------------------------------------------------------------- aggregate


def test_swept_keys_exclude_seed_and_constants(sweep: Path) -> None:
    assert report.swept_keys(report.collect(sweep)) == ["objective", "task.delta"]


def test_aggregate_groups_and_values(sweep: Path) -> None:
    agg = report.aggregate(report.collect(sweep))
    assert [(a["objective"], a["task.delta"]) for a in agg] == [("fkl", 3), ("fkl", 6), ("rkl", 3), ("rkl", 6)]
    for a in agg:
        vals = FINAL_OLD_MASS[(a["objective"], a["task.delta"])]
        mean = sum(vals) / 3
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / 2)
        assert a["old_mass_n"] == 3
        assert a["old_mass_mean"] == pytest.approx(mean)
        assert a["old_mass_ci"] == pytest.approx(_t975_df2() * sd / math.sqrt(3))
    fkl6 = agg[1]
    assert fkl6["n_runs"] == 4 and fkl6["n"] == 3 and fkl6["n_bad"] == 1  # the diverged run is left out
    assert fkl6["new_error_mean"] == pytest.approx(0.05)  # its inf new_error does not leak in


def test_aggregate_explicit_by(sweep: Path) -> None:
    rows = report.collect(sweep)
    (one,) = report.aggregate(rows, by=[], metrics=["old_mass"])
    assert one["n"] == 12 and one["n_runs"] == 13
    allv = [v for vs in FINAL_OLD_MASS.values() for v in vs]
    assert one["old_mass_mean"] == pytest.approx(sum(allv) / 12)
    by_obj = report.aggregate(rows, by=["objective"], metrics=["old_mass"])
    assert [a["objective"] for a in by_obj] == ["fkl", "rkl"] and [a["n"] for a in by_obj] == [6, 6]
    assert set(by_obj[0]) == {"objective", "n_runs", "n", "n_bad", *(f"old_mass_{s}" for s in
                                                                   ("n", "mean", "std", "ci", "lo", "hi"))}


# ---------------------------------------------------------------------------------------------- write_report


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_write_report_files(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = report.write_report(sweep, out)
    runs = _read_csv(out / "runs.csv")
    assert len(runs) == 13
    assert not any(k.startswith("_") for k in runs[0])
    assert runs[2]["task.delta"] == "3" and float(runs[2]["old_mass"]) == pytest.approx(0.4)
    summ = _read_csv(out / "summary.csv")
    assert len(summ) == 4
    assert float(summ[0]["old_mass_mean"]) == pytest.approx(0.7 / 3)
    assert float(summ[0]["old_mass_ci"]) == pytest.approx(res["aggregate"][0]["old_mass_ci"])
    md = (out / "summary.md").read_text()
    assert "| objective | task.delta | n | old_mass |" in md
    assert f"| fkl | 3 | 3 | {0.7 / 3:.4g} ± " in md
    assert "| fkl | 6 | 3 (+1 bad) |" in md
    section = md.split("## Diverged / failed runs (1)", 1)[1]
    assert "2026-01-01_00-00-00/12 | diverged |" in section and "loss is nan" in section
    names = sorted(p.name for p in res["figures"])
    assert names == ["final_old_mass_vs_task.delta.png", "trajectories_old_mass.png"]
    for p in res["figures"]:
        assert is_png(p) and f"]({p.name})" in md
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_write_report_default_out_and_metrics(sweep: Path) -> None:
    res = report.write_report(sweep, metrics=["drift"], figures=False)
    assert res["summary_md"] == sweep / "report" / "summary.md"
    assert "| objective | task.delta | n | drift |" in res["markdown"] and "| old_mass |" not in res["table"]
    assert res["figures"] == []


def test_read_trajectory_skips_blanks(sweep: Path) -> None:
    run = next(p for p in sweep.rglob("trajectory.csv")).parent
    steps, vals = report.read_trajectory(run, "loss")
    assert steps == [50.0, 100.0] and len(vals) == 2
    assert report.read_trajectory(run, "missing") is None


# ---------------------------------------------------------------------------------------------- main


def test_main_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path)]) == 2
    assert "no summary.json" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_main_prints_table(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert report.main([str(sweep), "--out", str(out), "--metrics", "old_mass,drift", "--no-figures"]) == 0
    text = capsys.readouterr().out
    assert "| objective | task.delta | n | old_mass | drift |" in text
    assert "1 run(s) not complete" in text
    assert (out / "summary.md").is_file() and not list(out.glob("*.png"))
