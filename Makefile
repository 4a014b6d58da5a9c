# Two commands for a newcomer: `make run` serves, `make test` tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test test-fast lint venv test-venv fixtures golden bench soak clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Runtime install (stamp file so repeated `make run` is instant).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

run: $(VENV)/.installed
	@echo "WARNING: serving WITHOUT EHR authentication (--no-auth); for local use only." >&2
	$(BIN)/cds-service serve --host $(HOST) --port $(PORT) --no-auth

# Lint: ruff check, ruff format --check, then mypy (strict, on cds_service); settings in
# pyproject.toml. `.venv/bin/ruff format cds_service tests bench fhir_fixtures` formats.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check cds_service tests bench fhir_fixtures
	$(BIN)/ruff format --check cds_service tests bench fhir_fixtures
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# The fast loop while working: every test not marked slow (see README, Commands); no lint. No
# fast test uses hypothesis or schemathesis, so their pytest plugins are not loaded (~1.5 s).
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow" -q -p no:hypothesispytest -p no:schemathesis -n 2

fixtures: $(VENV)/.installed-test
	$(BIN)/python fhir_fixtures/build_requests.py

# tests/golden: every fixture's answer under both order hooks (a reviewed diff when cards change).
golden: $(VENV)/.installed-test
	$(BIN)/python tests/golden_responses.py

# docs/clinical-rules.md from the rule table and policy.toml, and the README's table of token
# refusal reasons from cds_service.auth (a test fails when either is stale).
docs: $(VENV)/.installed
	$(BIN)/python -m cds_service.docs_gen

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Benchmarks print tables and write docs/performance.md (+ docs/performance.png); not tests.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(VENV)/.installed $(VENV)/.installed-test $@

# `make bench ONLY=monitor` runs one section (bench/bench.py --only; see its docstring).
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/bench.py $(if $(ONLY),--only $(ONLY))

# Soak: 5 minutes at 8 connections under gunicorn; exit 1 on any error or RSS growth >= 10%.
soak: $(VENV)/.installed-bench
	$(BIN)/python bench/soak.py
