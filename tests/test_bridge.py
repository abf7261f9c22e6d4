"""Training configs map onto the theory engine's TheoryConfig, and ptforget-theory writes its JSON."""

import json
import math
import os
import subprocess
import sys

import pytest

from ptforget.bridge import theory_config
from tests.conftest import compose_cfg


def test_task_and_objective_keys_reach_the_theory():
    tc = theory_config(compose_cfg("task.delta=5", "task.beta_star=0.2", "objective=fkl_replay", "objective.lam=0.3",
                                   "generator.weight=direct", "optimizer=sgd", "optimizer.lr=0.1"))
    assert (tc.delta, tc.beta_star, tc.replay, tc.weight, tc.lr) == (5.0, 0.2, 0.3, "direct", 0.1)
    oapl = theory_config(compose_cfg("objective=oapl", "objective.beta1=2.0", "objective.lag=100",
                                     "trainer.max_steps=500"))
    assert (oapl.tau, oapl.refreshes) == (2.0, 5)
    ttt = theory_config(compose_cfg("objective=ttt_discover", "objective.lam=0.5", "objective.beta=1.0"))
    assert (ttt.lam, ttt.gamma) == (0.5, 1.0)


def test_theory_cli_writes_json(tmp_path):
    out = tmp_path / "pred.json"
    proc = subprocess.run([sys.executable, "-c", "from ptforget.cli import theory_main; theory_main()",
                           "task.delta=6", "claims=all", f"output={out}"], capture_output=True, text=True, timeout=120,
                          env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["config"]["task"]["delta"] == 6  # the config the predictions were computed for
    data = data["predictions"]
    assert set(data) == {f"P{i}" for i in range(1, 18)}
    assert "P17" in proc.stdout
    q = {x["name"]: x["value"] for x in data["P17"]["quantities"]}
    assert q["bc_closed_form"] == pytest.approx(math.exp(-36 / 8), rel=1e-9)  # task.delta=6 reached the theory
    assert q["bc_quadrature"] == pytest.approx(q["bc_closed_form"], rel=1e-8)
