# The two commands of README: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export AIRFLOW_HOME := $(CURDIR)/.airflow
export PYTHONPATH := $(CURDIR)/plugins
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: venv demo airflow airflow-stop test test-unit test-integration test-e2e bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	# The mysql provider without mysqlclient, a C build needing system headers (see the file).
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt -c constraints.txt
	# The package itself, editable (plugins/ stays the source): registers the provider
	# (`capillary` connection type). Its dependencies are already pinned above.
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
PYTEST = rc=0; $(BIN)/python -m pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAIL: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The whole suite: unit, integration (sandbox, PostgreSQL, MariaDB, Redis) and end-to-end
# (real Airflow runs and deployments), in TEST_PROCESSES pytest processes, a file per process
# at a time: the deployment tests mostly wait (a 60 requests/min budget, a scheduler's loop).
TEST_PROCESSES ?= 4
test: venv
	@$(call PYTEST,tests -n $(TEST_PROCESSES) --dist loadfile --durations=30)

# No services: under a minute.
test-unit: venv
	@$(call PYTEST,tests/unit)

test-integration: venv
	@$(call PYTEST,tests/integration)

test-e2e: venv
	@$(call PYTEST,tests/e2e)

demo: venv
	$(BIN)/python scripts/demo.py

# A local deployment (docs/deployment.md): `make airflow`, `make airflow EXECUTOR=celery`,
# ports with API_PORT=... SANDBOX_PORT=...; `make airflow-stop` stops everything.
EXECUTOR ?= local
API_PORT ?= 8080
SANDBOX_PORT ?= 8090
airflow: venv
	$(BIN)/python scripts/local_airflow.py start --executor $(EXECUTOR) --api-port $(API_PORT) --sandbox-port $(SANDBOX_PORT)

airflow-stop:
	$(BIN)/python scripts/local_airflow.py stop

bench: venv
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .airflow demo bench/out
