# The README's commands. Everything runs from a virtualenv in .venv, created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agent_platform
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
# No idle pooled connections in tests: they would keep reconnecting to the test database after it is dropped.
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) DB_POOL_MIN_SIZE=0

.PHONY: install run worker test lint format bench migrations-check deploy-check clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

# Without bubblewrap and socat, `make run` runs agents unsandboxed (DEBUG only, with a warning).
UNSANDBOXED = $(if $(shell command -v bwrap && command -v socat),,SANDBOX_RUNNER=unsandboxed )

# The platform on its embedded defaults (SQLite, in-process runs, offline model) or whatever .env says.
run: install
	@command -v bwrap >/dev/null && command -v socat >/dev/null || { \
	  echo "WARNING: bubblewrap/socat not found: agents will run UNSANDBOXED (development only)."; \
	  echo "         Install them (apt-get install bubblewrap socat) to run agents in their sandbox."; }
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py bootstrapdemo --base-url http://127.0.0.1:$(PORT)
	$(UNSANDBOXED)$(PY) -m config.serve -b 127.0.0.1 -p $(PORT) config.asgi:application

# A run worker, for when CELERY_BROKER_URL is set (WORKER_CONCURRENCY runs at once, 4 by default).
worker: install
	$(VENV)/bin/celery -A config worker -l info

# The whole suite against PostgreSQL and Redis (unit, API, WebSocket, and end-to-end with real processes),
# as pytest processes at once, each on a database and a Redis database of its own: the end-to-end tests
# (mostly waiting on their Daphne, Celery, CLI and browser) in two halves, those of tests/e2e/ and those of
# the other folders (chat page, sandbox, MCP servers, …), beside the rest. Beside them another runs the tests
# marked `sqlite` (metrics, usage reports, budgets, dashboard) once more on `make run`'s embedded defaults: a
# SQLite file, no Redis, no broker. The other reports follow.
TEST_E2E_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agent_platform_e2e
TEST_E2E_REDIS_URL ?= redis://127.0.0.1:6379/1
TEST_E2E2_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agent_platform_e2e2
TEST_E2E2_REDIS_URL ?= redis://127.0.0.1:6379/2
E2E_TEST_ENV := DATABASE_URL=$(TEST_E2E_DATABASE_URL) REDIS_URL=$(TEST_E2E_REDIS_URL) DB_POOL_MIN_SIZE=0
E2E2_TEST_ENV := DATABASE_URL=$(TEST_E2E2_DATABASE_URL) REDIS_URL=$(TEST_E2E2_REDIS_URL) DB_POOL_MIN_SIZE=0
SQLITE_TEST_ENV := DATABASE_URL=sqlite:///$(CURDIR)/var/test-sqlite.sqlite3 REDIS_URL= CELERY_BROKER_URL=
test: install migrations-check deploy-check
	@mkdir -p var
	$(E2E_TEST_ENV) $(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS) > var/test-e2e.log 2>&1 & e2e=$$!; \
	$(E2E2_TEST_ENV) $(PY) -m pytest -m e2e --ignore=tests/e2e $(PYTEST_ARGS) > var/test-e2e2.log 2>&1 & e2e2=$$!; \
	$(SQLITE_TEST_ENV) $(PY) -m pytest -m sqlite $(PYTEST_ARGS) > var/test-sqlite.log 2>&1 & sqlite=$$!; \
	$(TEST_ENV) $(PY) -m pytest -m "not e2e" $(PYTEST_ARGS); rest=$$?; \
	wait $$e2e; e2e_status=$$?; wait $$e2e2; e2e2_status=$$?; wait $$sqlite; sqlite_status=$$?; \
	echo "--- on the embedded SQLite (a process of its own) ---"; cat var/test-sqlite.log; \
	echo "--- end-to-end tests of tests/e2e (a process of their own) ---"; cat var/test-e2e.log; \
	echo "--- end-to-end tests of the other folders (a process of their own) ---"; cat var/test-e2e2.log; \
	exit $$(( rest || e2e_status || e2e2_status || sqlite_status ))

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

# Django's deployment checks pass for a production configuration (the one .env.example describes).
DEPLOY_ENV := DEBUG=0 SECRET_KEY=ci-only-$$(date +%s)-not-a-real-secret-key-0123456789abcdef ALLOWED_HOSTS=agents.example.com \
	SECURE_SSL_REDIRECT=1 SECURE_HSTS_SECONDS=31536000 $(TEST_ENV)
deploy-check: install
	$(DEPLOY_ENV) $(PY) manage.py collectstatic --noinput -v0
	$(DEPLOY_ENV) $(PY) manage.py check --deploy --fail-level WARNING

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(TEST_ENV) $(PY) -m benchmarks.bench

clean:
	rm -rf var db.sqlite3 db.sqlite3-*
