# tierflow: `make run` and `make test` do all the setup on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_TASK ?= What is 17 * 23 + 4?
# llama-cpp-python compiles llama.cpp from source (7-10 minutes on 2 cores, once).
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
# For any x86-64 with AVX2 rather than -march=native: a native build on a CPU with AMX (Intel
# Sapphire Rapids) crashed on its first decode of more than one token in these VMs. Built
# without pip's wheel cache, so that a wheel built with other flags is never reused.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# BFCL's data and checker; --no-deps because its requirements name every vendor SDK.
# onnxruntime (the decision memory's embeddings) writes ~/.cache/Microsoft and queues usage
# events for upload unless this is set before it is imported; tierflow's CLI sets it too.
export ORT_DISABLE_TELEMETRY ?= 1
BFCL_EVAL ?= bfcl-eval==2026.3.23
QUICK ?= 10

.PHONY: lock setup models run demo browser postgres reliability test check lint eval eval-full bench results-table screenshots docs docs-build clean

setup: $(VENV)/.installed

# Every extra, at the versions of requirements-dev.lock (the environment CI tests).
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --no-cache-dir \
	  -c requirements-dev.lock 'llama-cpp-python[server]'
	$(BIN)/python -m pip install --quiet -c requirements-dev.lock -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps '$(BFCL_EVAL)'
	@touch $@

# Pin the development environment as it is now (after changing pyproject.toml's dependencies).
# torch is pinned without its local tag (+cpu), so that PyPI's build of the same release matches.
lock: setup
	{ echo "# The development environment, pinned: make setup installs with these as constraints."; \
	  echo "# Regenerate after changing dependencies: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^tierflow' | sed 's/^\(torch==[^+]*\)+cpu$$/\1/'; } > requirements-dev.lock

models: setup
	$(BIN)/tierflow models pull qwen2.5-coder-0.5b
	$(BIN)/tierflow models pull qwen2.5-coder-1.5b
	$(BIN)/tierflow models pull minilm

# The task console on http://127.0.0.1:8501 (models load on first use, once per process).
run: models
	$(BIN)/tierflow ui

# One task on the command line, then its trace.
demo: models
	$(BIN)/tierflow run "$(DEMO_TASK)"
	$(BIN)/tierflow runs show last

# The console's end-to-end test drives Debian's Chromium (Playwright's own download is blocked here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium with apt-get (for the console's browser test)"; \
	  apt-get update -qq && apt-get install -y -qq chromium; }

# The reliability suite also runs the trace store on a real PostgreSQL server it starts.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql with apt-get (for the database reliability tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

test: models browser postgres lint
	$(BIN)/python -m pytest

# Lint, types and the fast tests (no real model, no browser): a couple of minutes.
check: lint
	$(BIN)/python -m pytest -q -m "not real_slm and not real_llm"

# Lint, format, strict types, and the floors of the import graph (import-linter: no cycles, no
# upward import, no product module importing the evaluations; contracts in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd "$$(.ci/typecheck-tree)" && $(CURDIR)/$(BIN)/mypy -p tierflow
	cd "$$(.ci/typecheck-tree)" && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/pyproject.toml

# A quick look (minutes): QUICK items of each BFCL category and a few tasks, every policy.
eval: models
	for c in simple_python multiple irrelevance; do \
	  $(BIN)/tierflow eval tools --suite bfcl:$$c --limit $(QUICK) --policy slm --policy tiered --policy llm \
	    --out evals/results/quick || exit 1; done
	$(BIN)/tierflow eval tasks --limit $(QUICK) --policy tiered --out evals/results/quick
	$(BIN)/tierflow eval routing --out evals/results/quick
	$(BIN)/tierflow eval memory --limit $(QUICK) --out evals/results/quick

# The committed results (hours on 2 cores): 100 items per category, the curve, tasks, summaries.
eval-full: models
	for c in simple_python multiple irrelevance; do \
	  $(BIN)/tierflow eval tools --suite bfcl:$$c --limit 100 --policy slm --policy llm || exit 1; done
	$(BIN)/tierflow eval confidence
	# the paired runs and the scorer that ship with tierflow (a user's go to the results dir)
	$(BIN)/tierflow eval routing --collect --warm-memory --train \
	  --runs evals/data/routing/runs.jsonl --scorer agents/data/escalation_scorer.json
	for c in simple_python multiple irrelevance; do \
	  $(BIN)/tierflow eval tools --suite bfcl:$$c --limit 100 --policy tiered || exit 1; done
	$(BIN)/tierflow eval tasks --policy slm --policy tiered --policy llm
	$(BIN)/tierflow eval summaries
	$(BIN)/tierflow eval memory
	# escalation in a graph of kit steps: validation only, the priors, calibrated for a loss and a share
	$(BIN)/tierflow eval kit --suite bfcl --limit 60
	$(BIN)/tierflow eval kit --suite triage
	# the SLM's learning curve: adapters trained on 100, 200 and 400 LLM decisions (hours), then
	# on the verified ones only, at a lower learning rate
	$(BIN)/tierflow eval learn
	$(BIN)/tierflow eval learn --lessons verified --learning-rate 1e-4
	# 1,000 documents (short passages, half under 2,000 characters) through tierflow summarize, killed and
	# resumed, then on a 2-node Ray cluster
	$(BIN)/tierflow eval large-job --shortest 600 --longest 2400
	$(MAKE) results-table

# The reliability suite with its tally: evals/results/reliability.{json,md} (the README's table).
reliability: models browser postgres
	TIERFLOW_RELIABILITY_REPORT=evals/results $(BIN)/python -m pytest -q tests/reliability
	$(MAKE) results-table

bench: models
	$(BIN)/tierflow eval bench
	$(BIN)/tierflow eval batch
	$(MAKE) results-table

# The documentation site on http://127.0.0.1:8000 (mkdocs.yml, docs/): the API pages read the
# installed layout (.ci/typecheck-tree); the settings and CLI pages are generated from the code.
# The test suite builds it with --strict (tests/test_docs.py).
docs: setup
	.ci/typecheck-tree >/dev/null
	$(BIN)/mkdocs serve --strict -a 127.0.0.1:8000

docs-build: setup
	.ci/typecheck-tree >/dev/null
	$(BIN)/mkdocs build --strict -d build/site

# The console's screenshots in evals/results/console/ (tests write theirs to a temporary folder).
screenshots: models browser
	TIERFLOW_SCREENSHOTS=$(CURDIR)/evals/results/console $(BIN)/python -m pytest -q tests/test_ui_browser.py -k chromium

results-table: setup
	$(BIN)/tierflow eval readme

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
