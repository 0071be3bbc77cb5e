# potforge — set-up and everyday commands. `make demo` and `make test` work on a fresh machine:
# they create .venv on first use and install potforge into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint format bench gpaw clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel on these machines; a bare `torch` would pull CUDA
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,hipnn]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job: a small active-learning campaign on EMT, then its validation report
	$(BIN)/potforge run examples/quickstart.yaml --dir runs/quickstart

test: $(STAMP)  ## lint, then the test suite (fast tests; < 10 min on 2 cores)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	TORCHANI_NO_WARN_EXTENSIONS=1 $(BIN)/pytest -q

test-slow: $(STAMP)  ## the slow physics checks only
	TORCHANI_NO_WARN_EXTENSIONS=1 $(BIN)/pytest -q -m slow

gpaw: $(STAMP)  ## add GPAW (real DFT oracle); needs: apt-get install build-essential libxc-dev libopenblas-dev libfftw3-dev
	GPAW_CONFIG=$(CURDIR)/tools/gpaw-siteconfig.py $(BIN)/pip install --quiet -e '.[gpaw]'

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)  ## speed benchmarks (each prints potforge vs its peer, same run)
	TORCHANI_NO_WARN_EXTENSIONS=1 $(BIN)/python benchmarks/model_speed.py
	TORCHANI_NO_WARN_EXTENSIONS=1 $(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/sampler_speed.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
