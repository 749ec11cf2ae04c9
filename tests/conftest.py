"""Shared fixtures: Airflow home in the checkout, a real PostgreSQL and MariaDB, the sandbox process."""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import uuid
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
sys.path.insert(0, str(ROOT / "plugins"))

# Every property test draws the same examples on every run and every machine: a failure
# seen once is seen again, and a pass cannot hide a counter-example that a luckier run
# would find. No example database either, so nothing a previous run found changes the next.
# A test may still ask for more or fewer examples with its own @settings.
settings.register_profile("deterministic", derandomize=True, database=None, max_examples=100, deadline=None)
settings.load_profile("deterministic")

# `make test` runs files in parallel processes (pytest-xdist, --dist loadfile): the longest
# files start first, so the run does not end waiting on one of them (rough minutes here).
LONGEST_FIRST = (
    "e2e/test_celery_budget.py",  # ~9: 300+ requests at 60 a minute
    "e2e/test_reliability_faults.py", "e2e/test_approval.py", "e2e/test_trigger.py", "e2e/test_bench_dag.py",
    "e2e/test_celery_kill.py",
    "e2e/test_dag.py", "e2e/test_secrets.py", "e2e/test_browser.py", "e2e/test_mariadb.py",
    "e2e/test_local_deployment.py", "e2e/test_lineage.py", "e2e/test_provider.py", "e2e/test_alerts.py",
    "integration/test_shared_budget.py", "integration/test_warehouse.py", "integration/test_bad_input.py",
    "integration/test_properties.py",
)


def pytest_collection_modifyitems(items):
    """Run the longest files first (a stable sort: every other file keeps its place)."""
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith("tests/" + name)), len(LONGEST_FIRST))

    items.sort(key=rank)


PG_ADMIN_URL = os.environ.get("ASSOCIATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# MariaDB (or MySQL) server for the third engine, as an Airflow `mysql` connection URI.
MARIADB_ADMIN_URL = os.environ.get("ASSOCIATE_TEST_MARIADB", "mysql://root@127.0.0.1:3306")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test; a missing server fails the test, never skips it."""
    import psycopg2

    name = f"associate_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:  # pragma: no cover - environment failure
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN_URL}: {exc}")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def mariadb_admin():
    """A DB-API connection to the MariaDB server (no database); a missing server fails the test."""
    import mysql.connector

    url = urllib.parse.urlsplit(MARIADB_ADMIN_URL)
    try:
        return mysql.connector.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                                       user=url.username or "root", password=urllib.parse.unquote(url.password or ""),
                                       connection_timeout=5, autocommit=True)
    except mysql.connector.Error as exc:  # pragma: no cover - environment failure
        pytest.fail(f"MariaDB is required at {MARIADB_ADMIN_URL}: {exc}")


@pytest.fixture
def mariadb_url():
    """A fresh MariaDB database for one test (as a ``mysql://`` URI); a missing server fails the test."""
    name = f"associate_test_{uuid.uuid4().hex[:10]}"
    admin = mariadb_admin()
    cur = admin.cursor()
    cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield f"{MARIADB_ADMIN_URL.rstrip('/')}/{name}"
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def sqlite_conn(tmp_path, monkeypatch):
    """The id of an Airflow connection to a fresh SQLite warehouse file."""
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_TEST", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}))
    return "warehouse_test"


@pytest.fixture
def pg_conn(pg_url, monkeypatch):
    """The id of an Airflow connection to a fresh PostgreSQL warehouse database."""
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_TEST", pg_url)
    return "warehouse_test"


@pytest.fixture
def mariadb_conn(mariadb_url, monkeypatch):
    """The id of an Airflow connection (the mysql provider, mysql-connector-python) to a fresh MariaDB database."""
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_TEST", mariadb_url)
    return "warehouse_test"
