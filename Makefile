# Two commands for a fresh machine:  `make run`  (service)  and  `make test`  (whole test suite).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.14.1 torchvision==0.29.1
DATA   ?=
BIN     = $(VENV)/bin

.PHONY: run test lint venv browser-deps pgbouncer-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Torch first, pinned: it is the one large dependency and must match torchvision.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev,ray]"
	touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/actsearch up $(if $(DATA),--data $(DATA))

# Debian's chromium for the dashboard's browser tests (never `playwright install`).
browser-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install chromium"; fi; }

# Debian's pgbouncer: the worker tests run the race and fault tests through it too.
pgbouncer-deps:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; \
	  else echo "PgBouncer tests need Debian's pgbouncer: sudo apt-get install pgbouncer"; fi; }

test: $(VENV)/.installed browser-deps pgbouncer-deps
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) test-output .pytest_cache .mypy_cache .ruff_cache
