"""The built wheel works outside the repository: its configs ship inside it as the package ptforget.conf."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installed_in_a_fresh_venv_trains_and_checks_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ptforget-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # the dependencies come from this interpreter's site-packages (no network); its editable ptforget does not:
    # a plain path line adds the folder without running the .pth files inside it
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "ptforget_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PTFORGET_OUTPUT_DIR=str(work / "outputs"), PTFORGET_CACHE_DIR=str(work / "cache"),
               WANDB_MODE="disabled")
    where = subprocess.run([str(py), "-c", "import ptforget, ptforget.conf; print(ptforget.__file__); "
                            "print(ptforget.conf.__file__)"], cwd=work, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert all(str(venv) in p for p in where), where  # the installed copy, not the checkout
    train = subprocess.run([str(venv / "bin" / "ptforget-train"), "trainer.max_steps=20"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    assert list((work / "outputs" / "runs").rglob("summary.json"))
    check = subprocess.run([str(venv / "bin" / "ptforget-check"), "claims=[P1]", "executor=inline",
                            "profile.families.gmm.steps=100", "profile.families.mdn.steps=100",
                            "profile.families.flow.steps=20",
                            "profile.families.flow.overrides=['generator.pretrain.steps=50']"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stderr[-2000:]
    assert list((work / "outputs" / "check").rglob("report.md"))
