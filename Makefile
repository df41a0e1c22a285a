# Every target sets up what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup vllm test test-fast lint demo bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	$(BIN)/python -m ir3de_hf.assets  # pinned models and corpora, sha256-verified, into $$IR3DE_HF_CACHE
	touch $(STAMP)

setup: $(STAMP)

vllm:  # vLLM (CPU build) in its own venv, $$IR3DE_VLLM_VENV or the cache's; reused when its stamp matches the pins
	bash scripts/setup_vllm.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint vllm  # the slow tests run a real vLLM
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

demo: setup
	$(BIN)/python space_app/app.py  # the Gradio Space on the demo router (IR3DE_ROUTER=... for another)

bench: setup
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
