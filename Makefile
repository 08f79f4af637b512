# tierflow: `make run` and `make test` do all the setup on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_TASK ?= What is 17 * 23 + 4?
# llama-cpp-python compiles llama.cpp from source (7-10 minutes on 2 cores, once).
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: setup models run test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

models: setup
	$(BIN)/tierflow models pull qwen2.5-coder-0.5b
	$(BIN)/tierflow models pull qwen2.5-coder-1.5b

run: models
	$(BIN)/tierflow run "$(DEMO_TASK)"
	$(BIN)/tierflow runs show last

test: models lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	cd "$$(.ci/typecheck-tree)" && $(CURDIR)/$(BIN)/mypy -p tierflow

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
