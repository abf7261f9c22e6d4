"""The theory honours a full task covariance (whitened inside, data units outside, both stated), the check refuses
one, and ptforget-theory writes into its own run folder with the config it computed for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptforget.bridge import theory_config
from ptforget.check import predictions
from ptforget.errors import ConfigError
from ptforget.tasks import TwoModeTask
from ptforget.theory.config import format_predictions, in_data_units, predictions_to_json
from tests.conftest import compose_cfg

FULL = "task.covariance=[[1.0,0.5],[0.5,2.0]]"


def _values(preds, claim: str) -> dict[str, tuple[float, str]]:
    p = next(p for p in preds if p.claim == claim)
    return {n: (v, u) for n, v, u, _ in p.quantities}


def test_full_covariance_is_whitened_and_mapped_back_to_data_units() -> None:
    tc = theory_config(compose_cfg(FULL, "objective=fkl"), whitened=True)
    cov = np.array([[1.0, 0.5], [0.5, 2.0]])
    task = TwoModeTask(dim=2, delta=4.0, covariance=cov.tolist())
    d = (task.mu_new - task.mu_old).double().numpy()
    assert float(np.sqrt(d @ np.linalg.solve(cov, d))) == pytest.approx(tc.delta, rel=1e-6)  # Mahalanobis Delta
    # one Mahalanobis unit along the axis is ||mu_n - mu_o|| / Delta data units
    assert tc.whitened and tc.axis_length == pytest.approx(np.linalg.norm(d) / 4.0, rel=1e-6)
    assert tc.axis_length == pytest.approx(np.sqrt(1.25)) and not tc.axis_exact
    iso = theory_config(compose_cfg("objective=fkl"))
    raw, iso_preds = predictions(tc, ["P1"]), predictions(iso, ["P1"])
    got, unit = _values(in_data_units(raw, tc), "P1")["flow_final_old_mean_error"]
    whitened = _values(iso_preds, "P1")["flow_final_old_mean_error"][0]  # Sigma_11 = 1: the same whitened flow
    assert unit == "data units (axis)" and got == pytest.approx(whitened * np.sqrt(1.25), rel=1e-9)
    text = format_predictions(raw, tc)
    assert "whitened coordinates" in text and "Mahalanobis" in text and "not an eigenvector" in text
    js = predictions_to_json(raw, tc, config={"task": {"covariance": cov.tolist()}})
    assert js["units"]["coordinates"] == "whitened" and js["theory_config"]["covariance"] == cov.tolist()


def test_a_diagonal_covariance_is_exact_and_equals_the_isotropic_scale_along_the_axis() -> None:
    # the axis is an eigenvector: data-space GD keeps the means on it, exactly the task with sigma = 2 there
    tc = theory_config(compose_cfg("task.covariance=[[4.0,0.0],[0.0,1.0]]", "objective=fkl"), whitened=True)
    iso = theory_config(compose_cfg("task.sigma=2.0", "objective=fkl"))
    assert tc.axis_exact and tc.sigma == 2.0 and tc.axis_length == pytest.approx(2.0)
    a = _values(in_data_units(predictions(tc, ["P1", "P4"]), tc), "P4")
    b = _values(predictions(iso, ["P1", "P4"]), "P4")
    for name in ("flow_final_old_mean_error", "initial_old_mean_force"):
        assert a[name][0] == pytest.approx(b[name][0], rel=1e-9), name


def test_an_isotropic_covariance_is_plain_sigma() -> None:
    tc = theory_config(compose_cfg("task.covariance=[[9.0,0.0],[0.0,9.0]]"))
    assert not tc.whitened and tc.sigma == 3.0


def test_the_check_refuses_a_full_covariance_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        theory_config(compose_cfg(FULL))
    assert err.value.key == "task.covariance" and "isotropic" in err.value.allowed


def test_theory_cli_writes_a_new_run_folder_with_its_config(tmp_path: Path) -> None:
    env = {**os.environ, "PTFORGET_OUTPUT_DIR": str(tmp_path / "out")}
    cmd = [sys.executable, "-c", "from ptforget.cli import theory_main; theory_main()", FULL, "claims=[P1,P4]",
           "hydra.run.dir=" + str(tmp_path / "out" / "theory" / "fixed")]
    outs = []
    for _ in range(2):  # the same folder twice: the second run writes beside the first, never over it
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        outs.append(Path(proc.stdout.strip().rsplit("written: ", 1)[1]))
        assert "whitened coordinates" in proc.stdout and "data units (axis)" in proc.stdout
    assert [p.name for p in outs] == ["predictions.json", "predictions-2.json"]
    data = json.loads(outs[0].read_text())
    assert set(data["predictions"]) == {"P1", "P4"}
    assert data["config"]["task"]["covariance"] == [[1.0, 0.5], [0.5, 2.0]] and "hydra" not in data["config"]
    assert data["units"]["axis_length"] == pytest.approx(np.sqrt(1.25))
    q = {x["name"]: x for x in data["predictions"]["P4"]["quantities"]}
    assert q["flow_final_old_mean_error"]["unit"] == "data units (axis)"
    assert "Mahalanobis" in q["flow_final_old_mean_error"]["note"]
