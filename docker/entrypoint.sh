#!/usr/bin/env bash
# ptforget container entrypoint (PID 1 is tini): report the GPUs this container sees, then exec the command.
#   no arguments                -> ptforget-check
#   Hydra overrides only        -> ptforget-check <overrides>     (e.g. `profile=full claims=[P1,P10]`)
#   anything else               -> run as given                   (e.g. `ptforget-train -m seed=0,1,2`)
# Set PTFORGET_ENTRYPOINT_QUIET=1 to skip the GPU report. The report goes to stderr, so stdout stays the
# command's own.
set -euo pipefail

report_gpus() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L || echo "ptforget-entrypoint: nvidia-smi is present but failed (no driver access?)"
    else
        echo "ptforget-entrypoint: no nvidia-smi (no GPU passed in: use --gpus all or compose's GPU reservation)"
    fi
    python - <<'PY' || echo "ptforget-entrypoint: torch could not be imported"
import torch

if torch.cuda.is_available():
    names = ", ".join(f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees {torch.cuda.device_count()} GPU(s): {names}")
else:
    print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no GPU; running on CPU")
PY
}

if [[ "${PTFORGET_ENTRYPOINT_QUIET:-0}" != "1" ]]; then
    report_gpus >&2
fi

# no command, or only overrides/options: they are for the default command
if [[ $# -eq 0 || "$1" == *=* || "$1" == -* ]]; then
    set -- ptforget-check "$@"
fi
exec "$@"
