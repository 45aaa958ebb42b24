# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test
# Local development runs with DEBUG on (a key is generated in var/).
DEV_ENV := DEBUG=$${DEBUG:-true}
# Tests run as production does (DEBUG off) but over plain HTTP on 127.0.0.1.
# STATIC_ROOT: never collected, so tests serve the current static files, not a stale build.
TEST_ENV := SECRET_KEY=insecure-test-only-key HTTPS=false STATIC_ROOT=var/test-static

.PHONY: run test test-sqlite test-postgres lint format bench bench-quick venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(DEV_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEV_ENV) $(BIN)/python manage.py setup_demo
	$(DEV_ENV) $(BIN)/python -m backoffice.serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SECRET_KEY=type-checking-only $(BIN)/mypy taskrunner backoffice

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint test-sqlite test-postgres

# pytest exits 5 when it collected no test: a broken suite, never a pass.
NO_TESTS = { status=$$?; [ $$status -ne 5 ] || echo "pytest collected no test (exit 5): failing" >&2; exit $$status; }

test-sqlite: $(STAMP)
	env -u DATABASE_URL $(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS) || $(NO_TESTS)

test-postgres: $(STAMP)
	DATABASE_URL=$(PG_TEST_URL) $(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS) || $(NO_TESTS)

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.features

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick
	$(BIN)/python -m bench.features --quick

clean:
	rm -rf $(VENV) var/test*.sqlite3*
