# Two commands set everything up on a fresh machine with Python 3.11:
#   make run   -> .venv with the pinned stack, then the default workflow
#   make test  -> .venv with the pinned stack, then the test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
# pytest-xdist workers for `make test` (one test file per worker at a time); 1 = serial
TEST_WORKERS ?= 2
# Rules call `python -m neurotrain...`: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv run replicates test smoke bench verify lint fmt docs clean

venv: $(STAMP)

# torch==2.13.0 is pinned in requirements.lock; pip never upgrades it because every
# package is installed from the exact pins in one resolve, and the project itself is
# installed with --no-deps.
$(STAMP): requirements.lock requirements-reference.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-reference.txt
	@$(BIN)/python -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '2.13.0' else 'torch %s installed, expected 2.13.0' % v)"
	touch $(STAMP)

# A rerun after any interruption needs no extra flags: a lock left by a killed Snakemake is
# removed when no Snakemake runs here (neurotrain.workflow_lock), and profiles/default reruns
# incomplete jobs (training resumes from its checkpoint).
run: $(STAMP)
	$(BIN)/python -m neurotrain.workflow_lock --configfile config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

# Every system's default run with 3 training seeds, pooled per run (docs/runs.md)
replicates: $(STAMP)
	$(BIN)/python -m neurotrain.workflow_lock --configfile config/config.yaml config/replicates.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml config/replicates.yaml

smoke: $(STAMP)
	$(BIN)/python -m neurotrain.workflow_lock --configfile config/smoke.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ei_rnn.py
	$(BIN)/python benchmarks/bench_cebra.py
	$(BIN)/python benchmarks/bench_ring_attractor.py
	$(BIN)/python benchmarks/bench_lisbet.py
	$(BIN)/python benchmarks/bench_cpc_snn.py
	$(BIN)/python benchmarks/bench_workflow.py --cores $(if $(filter all,$(CORES)),$(shell nproc),$(CORES))

# The whole default run twice from scratch, every array compared (VERIFY_CONFIG=config/smoke.yaml: two minutes)
VERIFY_CONFIG ?= config/config.yaml
verify: $(STAMP)
	$(BIN)/python benchmarks/verify_determinism.py --configfile $(VERIFY_CONFIG) --cores $(if $(filter all,$(CORES)),$(shell nproc),$(CORES))

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile workflow/rules

# docs/configuration.md is generated from the schema (tests/test_config.py checks it is current)
docs: $(STAMP)
	$(BIN)/python -m neurotrain.config > docs/configuration.md

fmt: $(STAMP)
	$(BIN)/snakefmt Snakefile workflow/rules

clean:
	rm -rf results data .snakemake
