# One command surface: the README, a person and CI use these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN  := $(VENV)/.stamp-run
STAMP_DEV  := $(VENV)/.stamp-dev
STAMP_BENCH := $(VENV)/.stamp-bench

.PHONY: run test check bench demo system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@ $(STAMP_DEV) $(STAMP_RUN)

# Installs ffmpeg, redis-server, postgresql and fonts where missing (needs root/apt).
system-deps:
	@bash scripts/system-deps.sh

run: $(STAMP_RUN)
	$(BIN)/velocity serve

demo: $(STAMP_RUN)
	$(BIN)/python fixtures/make_fixtures.py demo var/fixtures
	$(BIN)/velocity render var/fixtures/demo -o var/demo.mp4
	@echo "Rendered var/demo.mp4"

test: $(STAMP_DEV) system-deps
	$(BIN)/python -m pytest -q

check: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests/unit/test_import_direction.py

bench: $(STAMP_BENCH) system-deps
	$(BIN)/python bench/run.py --repeat 2

clean:
	rm -rf var fixtures/out bench/out
