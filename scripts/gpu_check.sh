#!/usr/bin/env bash
# One prepared script for a lent GPU (see docs/performance.md): GPU-marked tests, the benchmark with batched seeds
# up to S = 1024, then the full check. Results land in ${OUT:-gpu_results}/. Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
export WANDB_MODE=disabled PTFORGET_OUTPUT_DIR="$OUT/outputs" PTFORGET_CACHE_DIR="$OUT/cache"
PY="${PY:-.venv/bin/python}"
nvidia-smi -L | tee "$OUT/device.txt"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/device.txt"
"$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
"$PY" scripts/bench.py --repeats 1 --device cuda --seeds 1,32,256,1024 --generator gmm 2>&1 | tee "$OUT/bench_gmm.txt"
"$PY" scripts/bench.py --repeats 1 --device cuda --seeds 1,32,256 --generator flow --steps 200 2>&1 \
  | tee "$OUT/bench_flow.txt"
timeout 420 .venv/bin/ptforget-check profile=full "train_overrides=[trainer=gpu]" 2>&1 | tail -80 | tee "$OUT/check_full.txt" || true
