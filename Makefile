# The project's interface. `make test` on a fresh machine installs and starts
# everything it needs (Python packages, PostgreSQL, Neo4j, S3) by itself.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install deps stack-up stack-down stack-status run test lint typecheck bench migrate openapi clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

deps:
	@bash scripts/install-system-deps.sh

stack-up: deps install
	@bash scripts/stack.sh up

stack-down:
	@bash scripts/stack.sh down

stack-status:
	@bash scripts/stack.sh status

migrate: stack-up
	$(BIN)/overwatch migrate

run: stack-up
	$(BIN)/overwatch migrate
	$(BIN)/overwatch serve

test: stack-up
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy main.py api graph relational embeddings

bench: stack-up
	$(PY) -m bench $(BENCH_ARGS)

openapi: install
	$(BIN)/overwatch export-openapi docs/openapi.json

clean: stack-down
	rm -rf .local
