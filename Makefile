# One command surface: the README, a person and CI use these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN  := $(VENV)/.stamp-run
STAMP_DEV  := $(VENV)/.stamp-dev
STAMP_BENCH := $(VENV)/.stamp-bench

.PHONY: run test check bench demo system-deps clean

# pip's output (and setuptools' warnings) go to a log shown only on failure, so the last
# lines of `make run` are the service's URL and key.
PIP_QUIET = > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip $(PIP_QUIET)

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	@echo "installing Velocity into $(VENV) (log: $(VENV)/pip.log)"
	@$(BIN)/pip install -q -e . $(PIP_QUIET)
	@touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@ $(STAMP_DEV) $(STAMP_RUN)

# Installs ffmpeg, redis-server, postgresql and fonts where missing (needs root/apt).
system-deps:
	@bash scripts/system-deps.sh

var/fixtures/demo.zip: | $(STAMP_RUN)
	@$(BIN)/python fixtures/make_fixtures.py demo var/fixtures > /dev/null

run: $(STAMP_RUN) var/fixtures/demo.zip
	@$(BIN)/velocity serve

demo: $(STAMP_RUN)
	$(BIN)/python fixtures/make_fixtures.py demo var/fixtures
	$(BIN)/velocity render var/fixtures/demo -o var/demo.mp4
	@echo "Rendered var/demo.mp4"

test: $(STAMP_DEV) system-deps
	$(BIN)/python -m pytest -q

check: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests/unit/test_import_direction.py tests/unit/test_import_cycles.py \
		tests/unit/test_light_imports.py

bench: $(STAMP_BENCH) system-deps
	$(BIN)/python bench/run.py --repeat 2

clean:
	rm -rf var fixtures/out bench/out
