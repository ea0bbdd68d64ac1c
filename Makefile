# The project's interface. `make test` on a fresh machine installs and starts
# everything it needs (Python packages, PostgreSQL, Neo4j, S3) by itself, on a
# stack instance of its own (.local/test-stack, its own ports): never the
# servers `make run` uses.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly what uv.lock says; its own version is pinned here.
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
STACK := bash scripts/stack.sh
TEST_STACK := OVERWATCH_STACK_INSTANCE=test bash scripts/stack.sh
CHAOS_STACK := OVERWATCH_STACK_INSTANCE=chaos bash scripts/stack.sh

.PHONY: install uv lock deps stack-up stack-down stack-status test-stack-up test-stack-down \
	run test chaos lint typecheck bench bench-scale migrate openapi clean

uv:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock
	@$(MAKE) -s uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --extra dev
	@touch $(STAMP)

install: $(STAMP)

# Move the pinned set deliberately: re-resolve within pyproject.toml's bounds.
lock: uv
	$(UV) lock --upgrade
	@echo "uv.lock updated: review the diff, then make install"

deps:
	@bash scripts/install-system-deps.sh

stack-up: deps install
	@$(STACK) up

stack-down:
	@$(STACK) down

stack-status:
	@$(STACK) status

test-stack-up: deps install
	@$(TEST_STACK) up

test-stack-down:
	@$(TEST_STACK) down

migrate: stack-up
	ENVIRONMENT=development $(BIN)/overwatch migrate

run: stack-up
	ENVIRONMENT=development $(BIN)/overwatch migrate
	ENVIRONMENT=development $(BIN)/overwatch serve

# Tests start (or reuse) the test stack themselves (tests/conftest.py); the
# environment-URL and testcontainers paths described there still apply.
test: test-stack-up
	@bash scripts/install-system-deps.sh --browser
	$(BIN)/pytest $(PYTEST_ARGS)

# A longer chaos run on its own stack instance: SEED, SECONDS, WORKSTATIONS.
chaos: deps install
# Make variables, not shell ones: bash's own $$SECONDS (time since the shell
# started) would otherwise stand in for an unset SECONDS.
	$(PY) -m bench.chaos --seed $(or $(SEED),1) --seconds $(or $(SECONDS),120) \
		--workstations $(or $(WORKSTATIONS),4)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy main.py api graph relational embeddings

bench: deps install
	OVERWATCH_STACK_INSTANCE=bench $(STACK) up
	eval "$$(OVERWATCH_STACK_INSTANCE=bench $(STACK) env)" && $(PY) -m bench $(BENCH_ARGS)

# Search at 1M world nodes on a stack instance of its own (`scale`); the loaded data
# is kept in .local/scale-stack and reused (SCALE_DROP=1 reloads). Neo4j memory:
# SCALE_HEAP / SCALE_PAGECACHE (a running instance keeps the memory it started with).
bench-scale: deps install
	OVERWATCH_STACK_INSTANCE=scale OVERWATCH_NEO4J_HEAP=$(or $(SCALE_HEAP),4g) \
	  OVERWATCH_NEO4J_PAGECACHE=$(or $(SCALE_PAGECACHE),4g) $(STACK) up
	eval "$$(OVERWATCH_STACK_INSTANCE=scale $(STACK) env)" && $(PY) -m bench search_scale

openapi: install
	$(BIN)/overwatch export-openapi docs/openapi.json

clean: stack-down
	$(TEST_STACK) down
	$(CHAOS_STACK) down
	OVERWATCH_STACK_INSTANCE=bench $(STACK) down
	OVERWATCH_STACK_INSTANCE=scale $(STACK) down
	rm -rf .local
