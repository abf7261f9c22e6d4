"""A user's extension in their own package (docs/extending.md): an objective with its config group and a claim,
found through an entry point of ``ptforget.plugins``, checked by the same pre-flight as the built-in ones, trained
by ``ptforget-train`` and judged by ``ptforget-check claims=[MYCLAIM]``; a plain config folder works through
``hydra.searchpath`` and ``--config-dir`` with the same checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FILES = {
    "mypkg/__init__.py": '"""A user\'s extension of ptforget."""\n',
    "mypkg/objectives.py": '''"""SFT with a reverse-KL anchor to p*: NLL(p_new) + alpha KL(q || p*)."""

from ptforget.errors import check
from ptforget.objectives import ForwardKL


class AnchoredSFT(ForwardKL):
    name = "anchored_sft"

    def __init__(self, batch: int = 256, alpha: float = 0.5) -> None:
        super().__init__(batch)
        check(isinstance(alpha, int | float) and alpha >= 0, "objective.alpha", alpha, "a number >= 0")
        self.alpha = float(alpha)

    def loss(self, generator, step):
        nll, logs = super().loss(generator, step)
        kl = generator.expectation(lambda x: generator.log_prob(x) - self.task.log_prob("star", x), self.batch)
        return nll + self.alpha * kl, {**logs, "kl_anchor": kl.detach()}
''',
    "mypkg/conf/__init__.py": "",
    "mypkg/conf/objective/anchored_sft.yaml": "_target_: mypkg.objectives.AnchoredSFT\nbatch: 256\n"
                                              "alpha: 0.5  # weight of KL(q || p*)\n",
    "mypkg/claims.py": '''"""A user's claim: the anchor keeps more old-region mass than plain SFT."""

from ptforget.check import Claim, Rival, Row, RunSpec, discriminate, register


@register
class AnchorKeepsOldMass(Claim):
    id, title = "MYCLAIM", "An anchored SFT keeps more old-region mass than plain SFT"

    def specs(self, ctx):
        common = ("task.dim=1", "task.delta=3", "trainer.max_steps=40", "eval_every=20")
        return {name: RunSpec(f"mine {name}", "gmm", (f"objective={name}", *common), seeds=3)
                for name in ("fkl", "anchored_sft")}

    def runs(self, ctx):
        return list(self.specs(ctx).values())

    def rows(self, ctx, got):
        s = self.specs(ctx)
        gain = [a - b for a, b in zip(got[s["anchored_sft"]].values("old_mass"), got[s["fkl"]].values("old_mass"))]
        yield Row(self.title, "gmm", "theory", "Delta=3, 40 steps", "final old mass: anchored minus plain SFT",
                  gain, discriminate(0.05, Rival("the anchor changes nothing", 0.0, "SFT never sees old data"),
                                     margin=0.02, margin_why="a tenth of the anchor's predicted effect"))
''',
    "mypkg/ptforget_plugin.py": '"""The ptforget plugin of mypkg."""\n\nfrom mypkg import claims  # noqa: F401\n\n'
                                'SEARCHPATH = "pkg://mypkg.conf"\n',
    # what `pip install` of a package with [project.entry-points."ptforget.plugins"] leaves on sys.path
    "mypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n",
    "mypkg-0.1.dist-info/entry_points.txt": "[ptforget.plugins]\nmypkg = mypkg.ptforget_plugin\n",
    # a plain config folder (no package): an option of a built-in class, for hydra.searchpath / --config-dir
    "confdir/objective/sft_star.yaml": "_target_: ptforget.objectives.ForwardKL\nbatch: 128\ntarget: star\n",
}


@pytest.fixture
def ext(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    for rel, text in FILES.items():
        (tmp_path / "ext" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ext" / rel).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "ext"), *filter(None, [os.environ.get("PYTHONPATH")])]),
               PTFORGET_OUTPUT_DIR=str(tmp_path / "out"), WANDB_MODE="disabled")
    return tmp_path, env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("ptforget: error:"), proc.stderr
    return lines[0]


def test_a_users_objective_is_preflighted_and_trained(ext: tuple[Path, dict[str, str]]) -> None:
    tmp, env = ext
    train = str(BIN / "ptforget-train")
    typo = _one_error_line(_run([train, "objective=anchored_sft", "objective.alpah=1"], env, tmp))
    assert "objective.alpah=1" in typo and "'alpha'" in typo  # not Hydra's "Key 'alpah' is not in struct"
    assert "objective.alpha=-1" in _one_error_line(_run([train, "objective=anchored_sft", "objective.alpha=-1"],
                                                        env, tmp))
    assert not (tmp / "out").exists()  # nothing written for bad input
    run = tmp / "out" / "run"
    proc = _run([train, "objective=anchored_sft", "objective.alpha=1.0", "trainer.max_steps=40", "eval_every=20",
                 f"hydra.run.dir={run}"], env, tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["objective"] == "anchored_sft"
    assert summary["choices"]["objective"] == "anchored_sft" and summary["config"]["objective"]["alpha"] == 1.0
    # a plain config folder through Hydra's search path or --config-dir: the same one-line checks
    conf = tmp / "ext" / "confdir"
    for where in ([f"hydra.searchpath=[file://{conf}]"], ["--config-dir", str(conf)]):
        line = _one_error_line(_run([train, *where, "objective=sft_star", "objective.batchh=3"], env, tmp))
        assert "objective.batchh=3" in line and "'batch'" in line


def test_help_documents_a_plugins_keys_and_the_check_lists_its_claims(ext: tuple[Path, dict[str, str]]) -> None:
    tmp, env = ext
    proc = _run([str(BIN / "ptforget-train"), "--help", "objective=anchored_sft"], env, tmp)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "objective.alpha=0.5" in ln)
    assert "weight of KL(q || p*)" in line  # the plugin's own YAML comment
    check = _run([str(BIN / "ptforget-check"), "--help"], env, tmp)
    assert check.returncode == 0, check.stderr
    listed = check.stdout.split("claims (claims=[ID,...]", 1)[1]
    for cid in ("P1", "P10", "P17", "MYCLAIM"):  # built-in claims and the plugin's
        assert f"\n  {cid} " in listed, cid


def test_a_users_claim_runs_in_the_check(ext: tuple[Path, dict[str, str]]) -> None:
    tmp, env = ext
    out = tmp / "out" / "check"
    proc = _run([str(BIN / "ptforget-check"), "claims=[MYCLAIM]", "executor=inline", f"hydra.run.dir={out}"], env,
                tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [r for r in json.loads((out / "verdicts.json").read_text())["verdicts"]
            if r.get("claim") == "MYCLAIM"]
    assert len(rows) == 1 and rows[0]["family"] == "gmm" and len(rows[0]["values"]) == 3
    bad = _run([str(BIN / "ptforget-check"), "claims=[MYCLAIMX]"], env, tmp)
    assert "MYCLAIM" in _one_error_line(bad)  # the user's claim is among the allowed ids
