"""ptforget-theory prints the claims of the chosen objective with its parameters, says when the optimizer is not
the theory's, and a multirun writes one combined table into its own output folder."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from ptforget.predict import CLAIMS_BY_OBJECTIVE, GEOMETRY_CLAIMS, applicable_claims
from tests.conftest import compose_cfg

THEORY = [sys.executable, "-c", "from ptforget.cli import theory_main; theory_main()"]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PTFORGET_OUTPUT_DIR": str(tmp_path / "out")}
    return subprocess.run([*THEORY, *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_only_the_objectives_claims_with_its_parameters_and_an_adam_warning(tmp_path: Path) -> None:
    proc = _run(["objective=ttt_discover", "objective.lam=0.25", "optimizer=adam"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(Path(proc.stdout.strip().rsplit("written: ", 1)[1]).read_text())
    assert set(data["predictions"]) == {"P15", *GEOMETRY_CLAIMS}
    assert data["theory_config"]["lam"] == 0.25  # the objective's own KL strength, not the default 0.5
    assert "warning: optimizer=adam" in proc.stdout and "objective ttt_discover" in proc.stdout
    sgd = _run(["objective=rkl", "optimizer=sgd"], tmp_path)
    assert sgd.returncode == 0 and "warning" not in sgd.stdout
    assert set(json.loads(Path(sgd.stdout.strip().rsplit("written: ", 1)[1]).read_text())["predictions"]) == {
        *CLAIMS_BY_OBJECTIVE["rkl"], *GEOMETRY_CLAIMS}


def test_an_explicit_claims_list_stands() -> None:
    assert applicable_claims(compose_cfg("objective=fkl")) is not None
    cfg = compose_cfg("objective=fkl")
    OmegaConf.set_struct(cfg, False)
    cfg.claims = ["P6"]
    assert applicable_claims(cfg) is None
    cfg.claims = "all"
    assert applicable_claims(cfg) is None


def test_a_multirun_writes_one_combined_table_in_its_own_folder(tmp_path: Path) -> None:
    proc = _run(["-m", "task.delta=2,6", "objective=fkl", "optimizer=sgd"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    tables = list((tmp_path / "out" / "theory" / "multirun").glob("*/predictions.csv"))
    assert len(tables) == 1 and not (tmp_path / "multirun").exists()
    with tables[0].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["job"] for r in rows] == ["0", "1"]
    for r, delta in zip(rows, (2.0, 6.0), strict=True):
        assert f"task.delta={delta:g}" in r["overrides"]
        assert math.isclose(float(r["P17.bc_closed_form"]), math.exp(-delta**2 / 8), rel_tol=1e-9)
        assert r["theory_basis"] == "gd" and 0 <= float(r["predicted_old_mass"]) <= 1
    # SFT forgets: the predicted old mass at the end is far below p*'s for both separations
    assert all(float(r["predicted_old_mass"]) < 0.25 for r in rows)
