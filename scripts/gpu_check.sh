#!/usr/bin/env bash
# One prepared GPU check, within 5 minutes on one GPU (see docs/performance.md): member-steps/s per family, then the
# full profile's heaviest claims (by `ptforget-check dry_run=true`: P10 and P14) on the GPU.
#
# The GPU machine has its own Python and torch and no .venv and no network: the script installs ptforget and its
# dependencies (torch excepted: the machine's own is used) from carried wheels.
#   here (CPU box, network):  bash scripts/gpu_check.sh --prepare      # builds wheels/ (git-ignored: carry it)
#   there:                    bash scripts/gpu_check.sh                # results in ${OUT:-gpu_results}/
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${WHEELS:-wheels}"
if [[ "${1:-}" == "--prepare" ]]; then
  PY="${PY:-.venv/bin/python}"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "$PY" -m pip wheel --quiet --no-deps -w "$WHEELS" .
  # every dependency except torch and what the GPU box's torch already brings (numpy, sympy, ...) and the
  # optional extras (bench, dev, wandb); binary wheels are cp311: the GPU box's Python must be 3.11
  "$PY" -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|ptforget|jax|jaxlib|flowjax|equinox|paramax|optax|scipy|pytest|ruff|hadolint|shellcheck|wandb|sentry|ml_dtypes|opt_einsum|lineax|equinox|jaxtyping|wadler|numpy|networkx|sympy|mpmath|jinja2|markupsafe|fsspec|filelock|typing.extensions|opentelemetry|googleapis|protobuf|cwevals|setuptools|pip|wheel)' > "$WHEELS/requirements.txt"
  "$PY" -m pip wheel --quiet -w "$WHEELS" -r "$WHEELS/requirements.txt" --no-deps
  du -sh "$WHEELS"
  exit 0
fi
OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
export WANDB_MODE=disabled PTFORGET_OUTPUT_DIR="$OUT/outputs" PTFORGET_CACHE_DIR="$OUT/cache"
SYS_PY="${PY:-python3}"
"$SYS_PY" -m venv --system-site-packages .gpuvenv  # sees the machine's torch
PY=.gpuvenv/bin/python
"$PY" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps "$WHEELS"/*.whl
nvidia-smi -L | tee "$OUT/device.txt"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/device.txt"
# member-steps/s per family: whole runs (set-up and evaluations included), reverse KL, batch 256, 500 steps, the
# full profile's models (no pretraining: the step's cost does not depend on it), compile=true
timeout 150 "$PY" - <<'EOF' 2>&1 | tee "$OUT/families.txt" || true
import tempfile, time
from hydra import compose, initialize_config_module
from ptforget.train import run_training

CASES = [("gmm", 1024, []), ("mdn", 256, ["generator.pretrain.steps=0"]),
         ("flow", 256, ["generator.pretrain.steps=0"]), ("realnvp", 256, ["generator.pretrain.steps=0"])]
for family, S, extra in CASES:
    for compile_ in ("false", "true"):
        with initialize_config_module("ptforget.conf", version_base="1.3"):
            cfg = compose("train", overrides=["logger=none", "quiet=true", "checkpoint_every=0", f"generator={family}",
                                              "objective=rkl", "trainer=gpu", f"seeds={S}", "trainer.max_steps=500",
                                              "eval_every=50", f"compile={compile_}", *extra])
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run_training(cfg, d)
            wall = time.perf_counter() - t0
        print(f"{family:8s} S={S:5d} compile={compile_:5s} {S * 500 / wall:12.0f} member-steps/s  ({wall:.1f} s)",
              flush=True)
EOF
# the full profile's heaviest claims, inline on the GPU (what is left of the 5 minutes)
timeout 170 .gpuvenv/bin/ptforget-check profile=full "claims=[P10,P14]" executor=inline \
  "train_overrides=[trainer=gpu]" 2>&1 | tail -60 | tee "$OUT/check_full_heaviest.txt" || true
