"""The DAG re-run as operators do: named customers re-sent, and a backfill over several intervals."""

from __future__ import annotations

import sqlite3

import pytest

from dag_support import (  # noqa: F401 (airflow_home, sample, sandbox, sqlite_warehouse: fixtures)
    FULL, airflow_env, airflow_home, run_dag, sample, sandbox, sqlite_rows, sqlite_warehouse,
)

pytestmark = pytest.mark.slow


def test_customer_keys_resend_exactly_those(airflow_home, sandbox, sqlite_warehouse):
    env = airflow_env(airflow_home, {"conn_type": "sqlite", "host": str(sqlite_warehouse)}, sandbox.url)
    assert run_dag(env, conf=FULL).returncode == 0
    keys = [k for (k,) in sqlite_rows(
        sqlite_warehouse,
        "SELECT entity_key FROM associate_sync_state WHERE entity = 'customer' AND last_status = 'success' "
        "ORDER BY entity_key LIMIT 2",
    )]
    run = run_dag(env, conf={"customer_keys": keys})
    assert run.returncode == 0, run.log[-5000:]
    sent = {k for (k,) in sqlite_rows(
        sqlite_warehouse,
        "SELECT entity_key FROM associate_sync_results WHERE run_id = ? AND entity = 'customer'", run.run_id,
    )}
    assert sent == set(keys)


def test_backfill_over_three_intervals_sends_each_intervals_changes(airflow_home, sandbox, sqlite_warehouse):
    env = airflow_env(airflow_home, {"conn_type": "sqlite", "host": str(sqlite_warehouse)}, sandbox.url)
    assert run_dag(env, conf=FULL).returncode == 0  # the initial full sync
    keys = [k for (k,) in sqlite_rows(
        sqlite_warehouse,
        "SELECT entity_key FROM associate_sync_state WHERE entity = 'customer' AND last_status = 'success' "
        "ORDER BY entity_key LIMIT 6",
    )]
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    for i, day in enumerate(days):
        # Two customers change on each day, just before that day's interval runs.
        with sqlite3.connect(sqlite_warehouse) as db:
            for key in keys[2 * i: 2 * i + 2]:
                db.execute(
                    "UPDATE customers SET first_name = first_name || ' B', updated_at = ? WHERE customer_key = ?",
                    (f"{day}T12:00:00+00:00", key),
                )
        run = run_dag(env, logical_date=f"2026-03-0{i + 2}")  # the run of [day, day + 1)
        assert run.returncode == 0, run.log[-5000:]
        sent = {k for (k,) in sqlite_rows(
            sqlite_warehouse,
            "SELECT entity_key FROM associate_sync_results WHERE run_id = ? AND entity = 'customer'", run.run_id,
        )}
        assert sent == set(keys[2 * i: 2 * i + 2]), f"interval {day}: sent {sorted(sent)}"
