"""logger=wandb: one offline W&B run per seed, read back from the run files W&B wrote (its .wandb log), so that a
dashboard can draw seed bands: each run has its own seed's values (not the mean of the seeds), the group names
the study and the config, the name, job_type and tags are set, the config names the chosen options, the history
starts at step 0, the density figure and the summary are logged, and no cache folder is left in the run folder."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def wandb_records(path: Path) -> list:
    """The protobuf Records of an offline run's ``.wandb`` file (W&B's LevelDB-style log: a 7-byte header, 32 KiB
    blocks, each chunk = crc32 (4) + length (2) + type (1 full, 2 first, 3 middle, 4 last) + data)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def _read_run(folder: Path) -> dict:
    files = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    run: dict = {"history": [], "summary": {}}
    for r in wandb_records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(group=r.run.run_group, job_type=r.run.job_type, name=r.run.display_name, tags=list(r.run.tags),
                       config={i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "history":
            run["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                   for i in r.history.item})
        elif kind == "summary":
            run["summary"].update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
    return run


def test_two_seeds_give_two_offline_runs_whose_config_names_the_chosen_groups(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_DIR=str(tmp_path / "wandb-dir"), WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
               WANDB_SILENT="true", PTFORGET_OUTPUT_DIR=str(tmp_path / "out"), WANDB_BASE_URL="http://127.0.0.1:9")
    cmd = [str(BIN / "ptforget-train"), "logger=wandb", "seeds=2", "generator=gmm", "objective=fkl",
           "optimizer=sgd", "task.delta=3", "trainer.max_steps=60", "eval_every=20", "tags=[demo]", "quiet=true",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {k: _read_run(run_dir / f"seed{k}") for k in (0, 1)}
    assert runs[0]["group"] == runs[1]["group"] and runs[0]["group"].startswith("default-")
    assert runs[0]["name"] != runs[1]["name"] and runs[1]["name"].endswith("seed1")
    for k, run in runs.items():
        summary = json.loads((run_dir / f"seed{k}" / "summary.json").read_text())
        assert run["job_type"] == "train" and run["tags"] == ["demo", "gmm", "fkl"]
        assert run["name"].startswith("gmm fkl sgd") and "task.delta=3" in run["name"]
        assert run["config"]["choices"]["generator"] == "gmm" and run["config"]["choices"]["objective"] == "fkl"
        assert run["config"]["choices"]["optimizer"] == "sgd" and run["config"]["seed"] == k
        steps = [h["_step"] for h in run["history"] if "eval/old_mass" in h]
        assert steps == [0, 20, 40, 60]
        assert any("density/_type" in h for h in run["history"]), "density.png not logged"
        # this seed's own values, not the mean of the seeds
        assert run["summary"]["final/old_mass"] == summary["final"]["old_mass"]
        last = [h for h in run["history"] if "eval/old_mass" in h][-1]["eval/old_mass"]
        assert abs(last - summary["final"]["old_mass"]) < 1e-6
    assert runs[0]["summary"]["final/old_mass"] != runs[1]["summary"]["final/old_mass"]
    assert not [p for p in run_dir.rglob("*") if "cache" in p.name.lower()], "a cache folder in the run folder"
