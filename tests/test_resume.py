"""No lost results and no surprises: determinism, resume from last.ckpt, skipping finished runs, divergence."""

from __future__ import annotations

import pytest
import torch

from ptforget.io import read_json
from ptforget.train import RunDirError, run_training
from tests.conftest import compose_cfg, crash_at

CASES = {
    "gmm_rkl_cosine": ("objective=rkl", "optimizer.schedule=cosine"),
    "gmm_oapl": ("objective=oapl", "objective.lag=40"),
    "mdn_fkl_replay": ("generator=mdn", "objective=fkl_replay"),
    "gmm_rkl_batched": ("objective=rkl", "seeds=3"),
    "gmm_ttt_archive_kl": ("objective=ttt_discover", "objective.lam=1.0", "objective.reuse.enabled=true"),
    "gmm_sdft_ema": ("objective=sdft",),
    "gmm_rkl_replay_q0_buffer": ("objective=rkl_replay", "objective.source=q0", "objective.buffer=64"),
    "gmm_oapl_batched": ("objective=oapl", "objective.lag=40", "seeds=2"),
    "gmm_rkl_replay_q0_buffer_batched": ("objective=rkl_replay", "objective.source=q0", "objective.buffer=64",
                                         "seeds=2"),
}


def _trajectories(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("trajectory.csv"))}


@pytest.mark.parametrize("case", ["gmm_rkl_cosine", "gmm_rkl_batched"])
def test_same_config_and_seed_give_identical_trajectories(tmp_path, case):
    cfg = compose_cfg(*CASES[case], "trainer.max_steps=120", "eval_every=20", "seed=3")
    a = run_training(cfg, tmp_path / "a")
    run_training(cfg, tmp_path / "b")
    assert _trajectories(tmp_path / "a") == _trajectories(tmp_path / "b") != {}
    seeds = [m["seed"] for m in a["members"]] if "members" in a else [a["seed"]]
    assert seeds == ([3, 4, 5] if "seeds=3" in CASES[case] else [3])


@pytest.mark.parametrize("case", list(CASES))
def test_an_interrupted_run_resumes_to_the_same_trajectory(tmp_path, case):
    """Crash after the step-100 checkpoint; re-running resumes there and ends bit-identical to an unbroken run."""
    cfg = compose_cfg(*CASES[case], "trainer.max_steps=160", "eval_every=25", "checkpoint_every=50")
    reference = run_training(cfg, tmp_path / "ref")
    with crash_at(130), pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "last.ckpt").exists()
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["step"] == 100
    resumed = run_training(cfg, tmp_path / "run")
    assert _trajectories(tmp_path / "run") == _trajectories(tmp_path / "ref")
    members = resumed.get("members", [resumed])
    assert all(m["resumed_from_step"] == 100 and m["status"] == "complete" for m in members)
    assert [m["final"] for m in members] == [m["final"] for m in reference.get("members", [reference])]
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_a_checkpoint_of_another_config_is_moved_aside(tmp_path):
    """A killed run leaves last.ckpt and no summary; another config in that folder keeps the file (moved aside)."""
    cfg = compose_cfg("trainer.max_steps=100", "eval_every=20", "checkpoint_every=40")
    with crash_at(90), pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, tmp_path)
    (tmp_path / "summary.json").unlink()  # as after SIGKILL: only the checkpoint is left
    saved = (tmp_path / "last.ckpt").read_bytes()
    other = run_training(compose_cfg("trainer.max_steps=100", "eval_every=20", "seed=1"), tmp_path)
    assert other["resumed_from_step"] is None and other["status"] == "complete"
    assert [p.read_bytes() for p in tmp_path.glob("last.ckpt.aside-*")] == [saved]


def test_a_finished_run_is_skipped_and_left_byte_identical(tmp_path):
    cfg = compose_cfg("trainer.max_steps=40", "eval_every=20")
    first = run_training(cfg, tmp_path)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    again = run_training(cfg, tmp_path)
    assert again == first
    assert files == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match="holds a complete run of config"):  # another config never replaces it
        run_training(compose_cfg("trainer.max_steps=40", "eval_every=20", "task.delta=5"), tmp_path)
    assert files == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("seeds", [1, 2])
def test_a_diverging_run_records_status_step_and_reason(tmp_path, seeds):
    cfg = compose_cfg("objective=fkl", "optimizer=sgd", "optimizer.lr=1e30", "trainer.max_steps=100",
                      "eval_every=10", f"seeds={seeds}")
    s = run_training(cfg, tmp_path)
    for m in s.get("members", [s]):
        assert m["status"] == "diverged" and m["reason"].startswith("non-finite")
        assert 1 <= m["diverged_step"] <= 10
        path = tmp_path / (f"seed{m['seed']}" if seeds > 1 else "")
        assert read_json(path / "summary.json")["status"] == "diverged"
        assert (path / "trajectory.csv").read_text().splitlines()[1].startswith("0,")  # the step-0 row is kept


@pytest.mark.parametrize(("seeds", "algorithm"), [(1, "norm"), (3, "norm"), (1, "value")])
def test_gradient_clipping_bounds_every_update(tmp_path, seeds, algorithm):
    """trainer.gradient_clip_val works under manual optimization: with SGD at lr 1 and clip 1e-3, 40 steps move
    the old mean by at most 40 * 1e-3 (norm; sqrt(d) times that for value), where unclipped SFT moves it far."""
    common = ("objective=fkl", "optimizer=sgd", "optimizer.lr=1.0", "trainer.max_steps=40", "eval_every=20",
              f"seeds={seeds}")
    clipped = run_training(compose_cfg(*common, "+trainer.gradient_clip_val=0.001",
                                       f"+trainer.gradient_clip_algorithm={algorithm}"), tmp_path / "c")
    free = run_training(compose_cfg(*common), tmp_path / "f")
    bound = 40 * 1e-3 * (2**0.5 if algorithm == "value" else 1.0)
    for c, f in zip(clipped.get("members", [clipped]), free.get("members", [free]), strict=True):
        assert c["status"] == "complete"
        assert c["final"]["comp_drift"] <= bound + 1e-6
        assert f["final"]["comp_drift"] > 10 * bound
