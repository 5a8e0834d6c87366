# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv and install.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Storage. By default everything is embedded: the Dagster instance is this folder (dagster.yaml:
# SQLite under .local/dagster) and the warehouse is .local/warehouse.db. One setting moves both to
# PostgreSQL, from the command line or the environment:
#     make demo SYNC_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/sync_pipelines
# DAGSTER_HOME (instances/postgres: its dagster.yaml reads SYNC_DATABASE_URL) and the warehouse
# (sync_pipelines/settings.py) follow it. A DAGSTER_HOME or WAREHOUSE_URL you set yourself wins.
ifneq ($(strip $(SYNC_DATABASE_URL)),)
export SYNC_DATABASE_URL
# dagster-postgres is written for psycopg2; SQLAlchemy 2.1 reads a plain postgresql:// as psycopg 3.
export SYNC_DAGSTER_PG_URL ?= $(subst postgresql://,postgresql+psycopg2://,$(SYNC_DATABASE_URL))
DAGSTER_HOME ?= $(CURDIR)/instances/postgres
else
DAGSTER_HOME ?= $(CURDIR)
endif
export DAGSTER_HOME

.PHONY: install demo test lint dev sandbox webhooks reliability clean moodle-acceptance

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Where runs and the warehouse are kept (the storage setting above, resolved).
.PHONY: where
where: install
	@$(BIN)/python -m sync_pipelines.settings

## Full sync of the demo school against the local simulators (embedded SQLite, no server).
demo: install
	$(BIN)/python -m sync_pipelines.demo

## Every check: lint, format, Dagster definitions (`dg check defs`), and the test suite (SQLite and PostgreSQL).
test: install lint browser plugin-test
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs
	$(BIN)/pytest -n 4 --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## The Dagster UI at http://127.0.0.1:3000 (DAGSTER_PORT), with the demo school loaded: starts the
## simulators, exports the demo tenant's credentials, adds its partition, and stops it all on exit.
dev: install
	BIN=$(BIN) bash scripts/dev.sh

## Debian's headless Chromium, for the test that screenshots the UI: installed with apt when missing
## (as root; otherwise the screenshot test fails and says what to install).
.PHONY: browser
browser:
	@if command -v chromium-headless-shell >/dev/null || command -v chrome-headless-shell >/dev/null; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium-headless-shell (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null; \
	else \
	  echo "chromium-headless-shell is missing and this user cannot install it:" \
	    "run 'sudo apt-get install chromium-headless-shell' (the UI screenshot test needs it)" >&2; \
	fi

## The Moodle plugin (moodle_plugin/local_zohosync): `php -l` on every PHP file, then its PHPUnit suite
## against stubs of the Moodle API. Debian's php-cli, php-curl and phpunit are installed with apt when
## missing and you are root; otherwise this fails and says what to install. After a deliberate change
## to what the plugin sends: ZOHOSYNC_WRITE_FIXTURE=1 make plugin-test (rewrites its recorded deliveries).
.PHONY: plugin-test
plugin-test:
	@if ! command -v php >/dev/null || ! command -v phpunit >/dev/null \
	    || ! php -r 'exit(extension_loaded("curl") ? 0 : 1);' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing php-cli php-curl phpunit (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq php-cli php-curl phpunit >/dev/null; \
	  else \
	    echo "php, its curl extension or phpunit is missing and this user cannot install them:" \
	      "run 'sudo apt-get install php-cli php-curl phpunit' (make plugin-test needs them)" >&2; \
	    exit 1; \
	  fi; \
	fi
	@files=$$(find moodle_plugin -name '*.php' | sort); \
	  for f in $$files; do php -l "$$f" >/dev/null || exit 1; done; \
	  echo "php -l: $$(echo "$$files" | wc -l) PHP files, no syntax errors"
	phpunit -c moodle_plugin/local_zohosync/tests/phpunit.xml

## The benchmarks (benchmarks/): installs the bench extra (dlt, the peer) and runs them all, about 7
## minutes; writes BENCHMARKS.md and benchmarks/results.json. Needs PostgreSQL at 127.0.0.1:5432.
.PHONY: bench
bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run

## Capacity: N schools as production runs them (dagster-daemon, its code server, a run process per
## school per tick, PostgreSQL storage) through no-change cycles, and the schools a 2-core machine
## serves (benchmarks/capacity_bench.py; writes benchmarks/capacity_results.json). Needs PostgreSQL
## at 127.0.0.1:5432, and pgbouncer for its variant. SCHOOLS, CYCLES to choose; tens of minutes at 100.
SCHOOLS ?= 10 50 100
CYCLES ?= 2
.PHONY: bench-capacity
bench-capacity: install
	$(BIN)/python -m benchmarks.capacity_bench --schools $(SCHOOLS) --cycles $(CYCLES)

## The webhook receiver (POST /v1/webhooks/{zoho,moodle}/<tenant>), writing drop files for the sensors.
webhooks: install
	$(BIN)/python -m sync_pipelines.webhooks

## The Zoho simulator alone, in the foreground.
sandbox: install
	$(BIN)/python -m sync_pipelines.sandbox

## Airbyte's own Zoho CRM connector (PyPI airbyte-source-zoho-crm, pinned) against the Zoho
## simulator holding the demo school: check, discover, a full and an incremental read, each compared
## with what the simulator holds (scripts/airbyte_zoho.py). The connector lives in its own
## .venv-airbyte, created here: its airbyte-cdk conflicts with this project's dependencies.
.PHONY: airbyte
airbyte: install
	@test -x .venv-airbyte/bin/python || $(PYTHON) -m venv .venv-airbyte
	@test -f .venv-airbyte/.installed-source-zoho-crm-0.3.6 || { \
	  .venv-airbyte/bin/python -m pip install --quiet --upgrade pip && \
	  .venv-airbyte/bin/python -m pip install --quiet 'airbyte-source-zoho-crm==0.3.6' && \
	  touch .venv-airbyte/.installed-source-zoho-crm-0.3.6; }
	@# Every module under 2,000 records: the full read must hold every record the simulator holds.
	$(BIN)/python scripts/airbyte_zoho.py --airbyte-python .venv-airbyte/bin/python --scale 0.6
	@# The whole demo school: past 2,000 records the connector (page only) meets Zoho's documented limit.
	$(BIN)/python scripts/airbyte_zoho.py --airbyte-python .venv-airbyte/bin/python

clean:
	rm -rf .local

## The reliability suite with its long variants (faults, crashes, hostile input, load), then
## RELIABILITY.md from the figures the tests record.
reliability: install
	rm -rf .local/reliability
	$(BIN)/pytest -m "reliability or not reliability" sync_pipelines_tests/reliability
	$(BIN)/python scripts/reliability_report.py

## The Moodle side on a real Moodle site, not run in CI (it needs the site): MOODLE_URL, MOODLE_TOKEN
## (the pipeline's, from the plugin's cli/setup_pipeline.php), MOODLE_ADMIN_TOKEN (for changes "by
## hand"), GRADE_COURSE (a course with graded activities), MOODLE_DIR (the Moodle code, when run on the
## Moodle server: adds a unit assessment for the criteria check). It writes to the site: use a test site.
MOODLE_URL ?= http://127.0.0.1:8499
moodle-acceptance: install
	$(BIN)/python scripts/moodle_acceptance.py --url $(MOODLE_URL) $(if $(GRADE_COURSE),--grade-course $(GRADE_COURSE)) $(if $(MOODLE_DIR),--moodle-dir $(MOODLE_DIR))

## The production topology as separate processes (sync_pipelines_tests/topology/): the simulators,
## dagster-daemon, dagster-webserver and the webhook receiver on two fresh PostgreSQL databases, with
## deploy/dagster.postgres.yaml as the instance; a scheduled and a webhook run of the demo school
## through the run queue. About 1.5 to 2.5 minutes (it waits for the minute's cron tick). Needs
## PostgreSQL at 127.0.0.1:5432 (TEST_POSTGRES_URL). `make test` deselects it (marker topology).
.PHONY: topology
topology: install
	$(BIN)/pytest -p no:cacheprovider sync_pipelines_tests/topology -m topology
