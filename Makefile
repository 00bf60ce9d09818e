# pfasync: `make demo` starts the service on the embedded defaults and syncs, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests run against PostgreSQL (pytest-django creates and drops test_<name>): TEST_DATABASE_URL when set
# (CI: the system server), else an embedded server of their own in .pgdata-test/ (pytest.ini).
TEST_DATABASE_URL ?=
# `make demo DEMO_ARGS="--web-port 8080"`; see `python scripts/demo.py --help`.
DEMO_ARGS ?=

.PHONY: demo demo-once test lint install migrate run serve worker db-stop bench bench-quick clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed .env

# A local .env with freshly generated keys and this machine's settings (the embedded PostgreSQL server);
# an existing one only gains the keys it lacks.
.env: .env.example
	$(PYTHON) scripts/make_env.py .env.example .env
	@touch $@

# The service (web server, worker, PEMS simulator) on the embedded defaults, synced, until Ctrl-C.
demo: install
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

# The same, stopping everything after the first sync (CI).
demo-once: install
	$(BIN)/python scripts/demo.py --once $(DEMO_ARGS)

test: $(BIN)/.installed
ifeq ($(strip $(TEST_DATABASE_URL)),)
	DATABASE_URL= PFASYNC_EMBEDDED_POSTGRES=true $(BIN)/pytest $(PYTEST_ARGS)
else
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest $(PYTEST_ARGS)
endif

migrate: install
	$(BIN)/python manage.py migrate --noinput

# The production web server (gunicorn, configured by gunicorn.conf.py and WEB_* variables) on 127.0.0.1:8000.
serve: migrate
	$(BIN)/python -m gunicorn --config gunicorn.conf.py

# Django's development server (autoreload, DEBUG pages when DJANGO_DEBUG=true) on 127.0.0.1:8000.
run: migrate
	$(BIN)/python manage.py runserver 127.0.0.1:8000

# The background sync worker (set ENABLE_SYNC_WORKER=true in .env for the schedule).
worker: migrate
	$(BIN)/python manage.py qcluster

# Stop the embedded PostgreSQL servers (.pgdata/, and the tests' .pgdata-test/); the next use starts them again.
db-stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m pfasync.embedded_db stop; fi
	@if [ -x $(BIN)/python ] && [ -d .pgdata-test ]; then $(BIN)/python -m pfasync.embedded_db stop .pgdata-test; fi

# The throughput benchmark (PostgreSQL; about 15 minutes for a million rows, more on a slow day) and its CI-sized run.
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_sync.py --records 1000000

bench-quick: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_sync.py --quick

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Removes the virtualenv and the local databases (the embedded cluster in .pgdata/ too).
clean: db-stop
	rm -rf $(VENV) .venv-dlt .pgdata .pgdata.lock .pgdata-test .pgdata-test.lock .demo .pytest_cache
