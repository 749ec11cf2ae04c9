"""The associate_customers DAG end to end: real Airflow CLI, real warehouse, real sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dag_support import (  # noqa: F401 (airflow_home, sample, sandbox, sqlite_warehouse: fixtures)
    DAG_ID, FULL, ROOT, TILL, airflow_env, airflow_home, run_dag, sample, sandbox, sqlite_rows, sqlite_warehouse,
    task_tries,
)

pytestmark = pytest.mark.slow


def test_dag_file_imports_no_heavy_library_at_parse_time():
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]);"
        "heavy = [m for m in ('pandas', 'great_expectations', 'pyarrow', 'requests', 'phonenumbers') if m in sys.modules];"
        "print('heavy=' + ','.join(heavy))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "dags" / "associate_customers.py")],
        capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Airflow may log (deprecation) warnings to stdout too: only the marked line counts.
    assert "heavy=\n" in proc.stdout + "\n", f"heavy imports at parse time: {proc.stdout}"


def test_dagbag_has_no_import_errors_and_every_dag_has_tags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert DAG_ID in bag.dags
    for dag_id, dag in bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
    dag = bag.dags[DAG_ID]
    assert dag.doc_md
    assert set(dag.params.keys()) >= {"mode", "dry_run", "batch_size", "max_quarantine_ratio", "max_failed_ratio",
                                         "customer_keys", "phone_region"}
    post = dag.get_task("post")
    assert post.pool == "capillary_api"


# --- end to end --------------------------------------------------------------------------


def bulk_requests(sandbox) -> int:
    stats = sandbox.stats()
    by_endpoint = stats.get("requests", {})
    return sum(
        count for key, statuses in by_endpoint.items() if "customers/bulk" in key
        for count in (statuses.values() if isinstance(statuses, dict) else [statuses])
    )


def customer_details(sandbox, row) -> dict | None:
    """The customer Capillary holds for a warehouse row, found by its first primary identifier."""
    import pandas as pd

    from associate.capillary.settings import basic_authorization

    name, value = next(
        (name, str(row[column]).lstrip("+")) for column, name in
        (("external_id", "externalId"), ("mobile", "mobile"), ("email", "email")) if not pd.isna(row[column])
    )
    resp = requests.get(
        f"{sandbox.url}/v2/customers/lookup/customerDetails",
        params={"source": "ALL", "identifierName": name, "identifierValue": value},
        headers={"Authorization": basic_authorization(*TILL)}, timeout=10,
    )
    return resp.json() if resp.status_code == 200 else None


def assert_quiet_log(run) -> None:
    """No false error in a run's task logs, and the summary logged once."""
    assert "XCom not found" not in run.log, [l for l in run.log.splitlines() if "XCom not found" in l][:2]
    assert run.log.count("Run summary") == 1, run.log.count("Run summary")


def test_sqlite_run_sends_valid_rows_quarantines_bad_ones_and_rerun_sends_nothing(
    airflow_home, sandbox, sqlite_warehouse, sample
):
    env = airflow_env(airflow_home, {"conn_type": "sqlite", "host": str(sqlite_warehouse)}, sandbox.url)
    first = run_dag(env, conf=FULL)
    assert first.returncode == 0 and first.state == "success", first.log[-5000:]
    assert_quiet_log(first)

    results = sqlite_rows(
        sqlite_warehouse,
        "SELECT entity_key, status, capillary_id FROM associate_sync_results WHERE run_id = ? AND entity = 'customer'",
        first.run_id,
    )
    quarantined = {k for (k,) in sqlite_rows(
        sqlite_warehouse,
        "SELECT DISTINCT entity_key FROM associate_quarantine WHERE run_id = ? AND entity = 'customer'",
        first.run_id,
    )}
    companies, customers = sample
    assert quarantined, "the sample holds bad rows; none was quarantined"
    sent = {key for key, _, _ in results}
    assert sent | quarantined == set(customers["customer_key"]), "a row has no outcome"
    assert not sent & quarantined
    ok = [(k, cid) for k, status, cid in results if status in ("success", "warning")]
    assert len(ok) >= len(sent) * 0.9

    # Capillary holds every sent customer with the right company, role and parent.
    by_key = customers.set_index("customer_key")
    ids = dict(ok)
    for key, cid in ok:
        row = by_key.loc[key]
        details = customer_details(sandbox, row)
        assert details is not None, f"{key} missing in Capillary"
        assert details["id"] == cid, f"{key}: Capillary id differs from the recorded one"
        if not isinstance(row["company_external_id"], str):
            continue  # a customer of no fleet company has no association to check
        association = details["associationDetails"]
        assert association["fleetCompany"]["externalId"] == row["company_external_id"], key
        assert association["roleCode"] == row["role_code"], key
        parent = row["parent_customer_key"]
        if isinstance(parent, str) and parent in ids:
            assert details["associationDetails"]["parentCustomerId"] == ids[parent], f"{key}: wrong parent"

    # The quarantine never shows a raw mobile or email.
    reasons = " ".join(r for (r,) in sqlite_rows(sqlite_warehouse, "SELECT reason FROM associate_quarantine"))
    for mobile in customers["mobile"].dropna():
        if len(str(mobile)) >= 8:
            assert str(mobile).lstrip("+") not in reasons
    for email in customers["email"].dropna():
        assert str(email) not in reasons

    before = bulk_requests(sandbox)
    second = run_dag(env, conf=FULL)
    assert second.returncode == 0 and second.state == "success", second.log[-5000:]
    assert_quiet_log(second)  # nothing to send: `post` is mapped over no chunk
    assert bulk_requests(sandbox) == before, "the re-run sent customers although nothing changed"
    assert sqlite_rows(
        sqlite_warehouse,
        "SELECT count(*) FROM associate_sync_results WHERE run_id = ? AND entity = 'customer' AND status != 'failed'",
        second.run_id,
    ) == [(0,)]


def test_postgres_warehouse_end_to_end(airflow_home, sandbox, sample, pg_url):
    import psycopg2

    from bench.generate import load_postgres

    load_postgres(pg_url, *sample)
    env = airflow_env(airflow_home, pg_url, sandbox.url)
    run = run_dag(env, conf=FULL)
    assert run.returncode == 0 and run.state == "success", run.log[-5000:]
    with psycopg2.connect(pg_url) as db, db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM associate_sync_results WHERE run_id = %s AND entity = 'customer' AND status <> 'failed'",
            (run.run_id,),
        )
        (sent,) = cur.fetchone()
        cur.execute("SELECT count(*) FROM associate_sync_state WHERE entity = 'customer'")
        (state,) = cur.fetchone()
    assert sent > 50 and state >= sent

    before = bulk_requests(sandbox)
    again = run_dag(env, conf=FULL)
    assert again.returncode == 0, again.log[-5000:]
    assert bulk_requests(sandbox) == before


def test_dry_run_sends_nothing_and_writes_a_preview(airflow_home, sandbox, sqlite_warehouse):
    env = airflow_env(airflow_home, {"conn_type": "sqlite", "host": str(sqlite_warehouse)}, sandbox.url)
    run = run_dag(env, conf={**FULL, "dry_run": True})
    assert run.returncode == 0, run.log[-5000:]
    assert bulk_requests(sandbox) == 0
    (preview_file,) = (airflow_home / "reports").rglob("payload_preview.json")
    preview = json.loads(preview_file.read_text())
    assert preview["payloads_to_send"] > 0 and 0 < len(preview["payloads"]) <= preview["payloads_to_send"]
    assert Path(preview["all_payloads"].removeprefix("file://")).is_file()
    assert str(preview_file) in run.log


def test_quarantine_gate_stops_the_run_before_any_api_call(airflow_home, sandbox, sqlite_warehouse):
    env = airflow_env(airflow_home, {"conn_type": "sqlite", "host": str(sqlite_warehouse)}, sandbox.url)
    run = run_dag(env, conf={**FULL, "max_quarantine_ratio": 0.0})
    assert run.returncode != 0 and run.state == "failed"
    assert "quarantine" in run.log.lower()
    assert bulk_requests(sandbox) == 0
    assert sqlite_rows(sqlite_warehouse, "SELECT count(*) FROM associate_quarantine WHERE run_id = ?", run.run_id)[0][0] > 0
    # No retry can fix a broken load: the gate fails its one try (the DAG allows two retries).
    assert task_tries(airflow_home, run.run_id, "validate") == (1, "failed", 0)
    assert "max_quarantine_ratio" in run.log
