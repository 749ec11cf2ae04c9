"""The associate_customers DAG end to end with the warehouse on MariaDB (the mysql provider)."""

from __future__ import annotations

import pytest
import requests

from dag_support import TILL, airflow_env, migrate, run_dag, sandbox  # noqa: F401 (sandbox: a fixture)

pytestmark = pytest.mark.slow

WAREHOUSE = "warehouse_e2e"
CHANGED_ON = "2026-03-01T12:00:00"  # inside the interval of the run of logical date 2026-03-02


@pytest.fixture
def mariadb_warehouse(mariadb_url, monkeypatch):
    """A MariaDB warehouse holding a generated sample with some bad rows; returns its URI and frames."""
    from bench.generate import generate_warehouse
    from bench.loaders import load_frames

    companies, customers = generate_warehouse(80, seed=3, bad_ratio=0.06)
    monkeypatch.setenv(f"AIRFLOW_CONN_{WAREHOUSE.upper()}", mariadb_url)
    load_frames(WAREHOUSE, companies, customers)  # native DATETIME(6) columns, as a MariaDB user has them
    return mariadb_url, customers


def sql(query: str, *args) -> list[tuple]:
    """Rows of a query on the test's MariaDB warehouse, through the pipeline's own connection."""
    from associate.warehouse.dialect import connect

    with connect(WAREHOUSE) as (conn, _):
        cur = conn.cursor()
        cur.execute(query, args)
        rows = list(cur.fetchall()) if cur.description else []
        cur.close()
    return rows


def bulk_requests(sandbox) -> int:
    by_endpoint = sandbox.stats().get("requests", {})
    return sum(
        count for key, statuses in by_endpoint.items() if "customers/bulk" in key
        for count in (statuses.values() if isinstance(statuses, dict) else [statuses])
    )


def test_mariadb_warehouse_full_then_incremental_runs(tmp_path, sandbox, mariadb_warehouse):
    url, customers = mariadb_warehouse
    env = airflow_env(tmp_path / "home", url, sandbox.url)
    migrate(env)

    first = run_dag(env, conf={"mode": "full"})
    assert first.returncode == 0 and first.state == "success", first.log[-5000:]
    results = dict(sql("SELECT entity_key, status FROM associate_sync_results WHERE run_id = %s "
                       "AND entity = 'customer'", first.run_id))
    quarantined = {k for (k,) in sql("SELECT DISTINCT entity_key FROM associate_quarantine WHERE run_id = %s "
                                     "AND entity = 'customer'", first.run_id)}
    assert quarantined, "the sample holds bad rows; none was quarantined"
    assert set(results) | quarantined == set(customers["customer_key"]), "a row has no outcome"
    sent = [k for k, status in results.items() if status in ("success", "warning")]
    assert len(sent) >= len(results) * 0.9
    ids = dict(sql("SELECT entity_key, capillary_id FROM associate_sync_state WHERE entity = 'customer' "
                   "AND last_status IN ('success', 'warning')"))
    assert set(sent) <= set(ids) and all(ids[k] for k in sent)
    # The `check` column (a reserved word in MariaDB) holds the rule that failed.
    assert all(check for (check,) in sql("SELECT `check` FROM associate_quarantine WHERE run_id = %s", first.run_id))

    # In one day two customers change and two more are only touched (updated_at moves, the
    # payload stays): that day's incremental run reads all four, and sends only the changed.
    changed, touched = sorted(sent)[:2], sorted(sent)[2:4]
    for key in changed:
        sql("UPDATE customers SET first_name = CONCAT(first_name, ' B'), updated_at = %s WHERE customer_key = %s",
            CHANGED_ON, key)
    for key in touched:
        sql("UPDATE customers SET updated_at = %s WHERE customer_key = %s", CHANGED_ON, key)
    before = bulk_requests(sandbox)
    second = run_dag(env, logical_date="2026-03-02")
    assert second.returncode == 0 and second.state == "success", second.log[-5000:]
    assert "(mode incremental)" in second.log, "the run read everything"
    assert {k for (k,) in sql("SELECT entity_key FROM associate_sync_results WHERE run_id = %s "
                              "AND entity = 'customer'", second.run_id)} == set(changed)
    assert bulk_requests(sandbox) > before
    assert dict(sql("SELECT entity_key, last_run_id FROM associate_sync_state WHERE entity_key IN (%s, %s)",
                    *touched)) == {key: first.run_id for key in touched}, "an unchanged customer was sent again"
    by_key = customers.set_index("customer_key")
    for key in changed:  # Capillary holds the new name
        assert customer_first_name(sandbox, by_key.loc[key]).endswith(" B"), key


def customer_first_name(sandbox, row) -> str:
    """The first name Capillary holds for a warehouse row, found by its first primary identifier."""
    from associate.capillary.settings import basic_authorization

    name, value = next(
        (name, str(row[column]).lstrip("+")) for column, name in
        (("external_id", "externalId"), ("mobile", "mobile"), ("email", "email")) if isinstance(row[column], str)
    )
    resp = requests.get(f"{sandbox.url}/v2/customers/lookup/customerDetails",
                        params={"source": "ALL", "identifierName": name, "identifierValue": value},
                        headers={"Authorization": basic_authorization(*TILL)}, timeout=10)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()["profiles"][0]["firstName"]
