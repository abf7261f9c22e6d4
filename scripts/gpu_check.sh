#!/usr/bin/env bash
# One prepared script for a lent GPU (see docs/performance.md): GPU-marked tests, the benchmark table with batched
# seeds up to S = 1024, then the full check. Results land in ${OUT:-gpu_results}/. Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
export WANDB_MODE=disabled PTFORGET_OUTPUT_DIR="$OUT/outputs" PTFORGET_CACHE_DIR="$OUT/cache"
PY="${PY:-.venv/bin/python}"
nvidia-smi -L | tee "$OUT/device.txt"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/device.txt"
"$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
# the same table as docs/performance.md (one run, compile=true and eager, batched seeds up to S = 1024; target at
# S = 1024: >= 1e6 seed-steps/s); the JAX peer runs where jax has a GPU backend, and is skipped otherwise
"$PY" scripts/bench.py --repeats 1 --device cuda --peer jax --seeds 32,256,1024 2>&1 | tee "$OUT/bench_gmm.txt"
timeout 420 .venv/bin/ptforget-check profile=full "train_overrides=[trainer=gpu]" 2>&1 | tail -80 | tee "$OUT/check_full.txt" || true
