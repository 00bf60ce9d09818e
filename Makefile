# pfasync: `make demo` runs a sync on the embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests run against PostgreSQL (pytest-django creates and drops test_pfasync); `make test-sqlite` uses SQLite.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/pfasync
DEMO_PORT ?= 8900

.PHONY: demo test test-sqlite lint install migrate run worker bench bench-quick clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed .env

# A local .env with freshly generated keys; an existing one only gains the keys it lacks.
.env: .env.example
	$(PYTHON) scripts/make_env.py .env.example .env
	@touch $@

demo: install
	DEMO_PORT=$(DEMO_PORT) BIN=$(BIN) scripts/demo.sh

test: $(BIN)/.installed
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest $(PYTEST_ARGS)

test-sqlite: $(BIN)/.installed
	DATABASE_URL=sqlite:///$(CURDIR)/test.sqlite3 $(BIN)/pytest $(PYTEST_ARGS)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# The web server (API, admin, dashboard) for development; in production serve pfasync.wsgi:application.
run: migrate
	$(BIN)/python manage.py runserver 127.0.0.1:8000

# The background sync worker (set ENABLE_SYNC_WORKER=true in .env for the schedule).
worker: migrate
	$(BIN)/python manage.py qcluster

# The throughput benchmark (PostgreSQL; about 15 minutes for a million rows, more on a slow day) and its CI-sized run.
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_sync.py --records 1000000

bench-quick: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_sync.py --quick

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .venv-dlt db.sqlite3 db.sqlite3-* test.sqlite3* .pytest_cache
