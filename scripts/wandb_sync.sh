#!/usr/bin/env bash
# Upload the offline W&B runs found under an outputs directory (runs, sweeps, the check, Docker/SLURM jobs).
# Needs network access and a W&B login (`wandb login` or WANDB_API_KEY); everything else in ptforget logs
# offline. Runs already uploaded (wandb leaves a *.wandb.synced marker) are skipped unless --force.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/wandb_sync.sh [OUTPUTS_DIR] [--project P] [--entity E] [--dry-run] [--force]

  OUTPUTS_DIR    where ptforget wrote its runs (default: $PTFORGET_OUTPUT_DIR, else outputs); every
                 */wandb/offline-run-* directory below it is synced
  --project P    upload into project P instead of the one recorded in each run (logger.project)
  --entity E     upload under entity (user or team) E
  --dry-run      list what would be synced, upload nothing
  --force        also re-sync runs that were synced before
  -h, --help     this help

examples:
  scripts/wandb_sync.sh                                  # ./outputs
  scripts/wandb_sync.sh /scratch/me/ptforget/outputs --project ptforget-cluster --entity my-team
EOF
}

outputs="${PTFORGET_OUTPUT_DIR:-outputs}"
project="" entity="" dry_run=0 force=0 positional=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        -p | --project) [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }; project="$2"; shift 2 ;;
        --project=*) project="${1#*=}"; shift ;;
        -e | --entity) [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }; entity="$2"; shift 2 ;;
        --entity=*) entity="${1#*=}"; shift ;;
        --dry-run) dry_run=1; shift ;;
        --force) force=1; shift ;;
        -*) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
        *)
            [[ $positional -eq 0 ]] || { echo "error: one OUTPUTS_DIR only (got another: $1)" >&2; exit 2; }
            outputs="$1"; positional=1; shift ;;
    esac
done

[[ -d "$outputs" ]] || { echo "error: outputs dir not found: $outputs" >&2; exit 2; }

# the wandb CLI next to this project's Python if there is one, else the one on PATH
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wandb_bin="$here/.venv/bin/wandb"
[[ -x "$wandb_bin" ]] || wandb_bin="$(command -v wandb || true)"
[[ -n "$wandb_bin" ]] || { echo "error: wandb not found (pip install 'ptforget[wandb]')" >&2; exit 2; }

runs=()
skipped=0
while IFS= read -r -d '' dir; do
    if [[ $force -eq 0 ]] && compgen -G "$dir/*.wandb.synced" >/dev/null; then
        skipped=$((skipped + 1))
        continue
    fi
    runs+=("$dir")
done < <(find "$outputs" -type d -name 'offline-run-*' -path '*/wandb/*' -print0 | sort -z)

echo "outputs: $outputs  offline runs to sync: ${#runs[@]}  already synced (skipped): $skipped"
[[ ${#runs[@]} -gt 0 ]] || exit 0

args=()
[[ -n "$project" ]] && args+=(--project "$project")
[[ -n "$entity" ]] && args+=(--entity "$entity")

failed=0
for dir in "${runs[@]}"; do
    if [[ $dry_run -eq 1 ]]; then
        echo "would sync: $dir"
        continue
    fi
    echo "syncing: $dir"
    "$wandb_bin" sync ${args[@]+"${args[@]}"} "$dir" || { echo "failed: $dir" >&2; failed=$((failed + 1)); }
done

if [[ $failed -gt 0 ]]; then
    echo "$failed of ${#runs[@]} runs failed to sync" >&2
    exit 1
fi
