"""ptforget-check through its command line: killed and relaunched, submitit jobs, and the README's verdict block."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptforget.cli import verdicts_main
from tests.check.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
CHECK = [sys.executable, "-c", "from ptforget.cli import check_main; check_main()"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PTFORGET_OUTPUT_DIR": str(tmp_path / "outputs"), "WANDB_MODE": "disabled",
            "PYTHONUNBUFFERED": "1"}


def _summaries(root: Path) -> list[Path]:
    return list(root.rglob("summary.json"))


def test_a_sigkilled_check_relaunched_into_its_folder_reuses_finished_runs(tmp_path):
    out = tmp_path / "chk"
    args = [*CHECK, *TINY, "claims=[P5,P12]", "executor=inline", "profile.families.gmm.steps=300",
            "generators=[gmm]", "batch_seeds=false", "profile.replay_lambdas=[0.1,0.2,0.3]", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 240
    while len(_summaries(out)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(_summaries(out))
    assert 4 <= finished and not (out / "verdicts.json").exists()
    done = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads((out / "verdicts.json").read_text())
    assert payload["runs_reused"] >= finished - 1  # a run whose summary was being written may be redone
    plan = json.loads((out / "plan.json").read_text())
    assert payload["runs_reused"] + payload["runs_trained"] >= sum(j["seeds"] for j in plan["jobs"]) == 3 * (3 + 1)
    assert "reused" in done.stderr and {v["claim"] for v in payload["verdicts"]} == {"P5", "P12"}


def test_submitit_local_executor_gives_the_inline_verdicts(tmp_path):
    pytest.importorskip("submitit")
    common = [*TINY, "claims=[P1,P6]", "generators=[gmm]"]
    res = {}
    for ex in ("inline", "submitit_local"):
        out = tmp_path / ex
        p = subprocess.run([*CHECK, *common, f"executor={ex}", f"hydra.run.dir={out}"], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        res[ex] = json.loads((out / "verdicts.json").read_text())
    assert res["submitit_local"]["executor"] == "submitit (local)"
    assert [(v["claim"], v["family"], v["values"], v["verdict"]) for v in res["submitit_local"]["verdicts"]] == \
        [(v["claim"], v["family"], v["values"], v["verdict"]) for v in res["inline"]["verdicts"]]
    assert list((tmp_path / "submitit_local" / "submitit").glob("*_log.out"))  # the jobs ran through submitit


def test_the_readme_verdict_block_is_the_committed_check_s() -> None:
    """The README's verdict block is generated from docs/check/verdicts.json, never edited by hand; every figure it
    links is committed beside it."""
    root = ROOT
    verdicts, readme = root / "docs" / "check" / "verdicts.json", root / "README.md"
    assert verdicts.is_file(), "docs/check/verdicts.json: commit a quick check's verdicts.json"
    assert verdicts_main([str(verdicts), "--readme", str(readme), "--check", "--figure-prefix", "docs/check/"]) == 0
    block = readme.read_text().split("<!-- verdicts:start -->")[1].split("<!-- verdicts:end -->")[0]
    links = re.findall(r"\]\((docs/check/[^)]+\.png)\)", block)
    assert links and all((root / link).is_file() for link in links)
