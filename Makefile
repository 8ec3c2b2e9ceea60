# The two commands of the README: `make demo` and `make test`. Both create the environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch that satisfies pyproject's torch>=2.2; override for another build, e.g.
#   make demo TORCH_SPEC='torch>=2.2'
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv data demo test test-fast lint format docs docs-cli results bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Finds FashionMNIST (--data-dir, $$VAEGEN_DATA, ~/.cache/vaegen, /usr/share/datasets) or downloads
# it; where the download fails and we are root on Debian, installs Debian's dataset package.
data: venv
	@$(BIN)/vaegen data fetch fashion-mnist || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist package"; \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && \
	    $(BIN)/vaegen data fetch fashion-mnist; \
	  else exit 1; fi; }

# Trains the reference model (50 epochs) into runs/demo and draws its figures. Running it again
# continues an interrupted run, or only redraws a finished one.
demo: data
	$(BIN)/vaegen train --out runs/demo --resume

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: venv
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or
# anchor. Not -q: under -q mkdocs drops its warnings before --strict counts them.
docs: venv
	$(BIN)/mkdocs build --strict -d site

# docs/cli.md, written from the argument parser (a test checks that it is current).
docs-cli: venv
	$(BIN)/python scripts/render_cli_reference.py

# The tables of docs/results/ and README.md's headline, rendered from benchmarks/results/*.jsonl.
results: venv
	$(BIN)/python scripts/render_results.py

# Every test, after the docs and the linters; skips are listed with their reason (-rs).
# `make test-fast` leaves out the tests marked slow (training on FashionMNIST, SIGKILL loops,
# browser checks), for the edit loop.
test: docs lint
	$(BIN)/pytest -q -rs

test-fast: venv
	$(BIN)/pytest -q -rs -m "not slow"

bench: data
	$(BIN)/python benchmarks/epoch_speed.py

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache .ruff_cache
