"""OpenLineage: a real ``airflow dags test`` run with the provider's file transport emits, per
task, the warehouse tables it reads and writes and the Capillary APIs it sends to.
"""

from __future__ import annotations

import json

import pytest

from dag_support import TILL, airflow_env, migrate, run_dag

pytestmark = pytest.mark.slow


def datasets(event: dict, side: str) -> set[tuple[str, str]]:
    return {(dataset["namespace"], dataset["name"]) for dataset in event.get(side) or []}


def test_a_run_emits_warehouse_tables_in_and_capillary_datasets_out(tmp_path):
    from associate.sandbox.launcher import SandboxProcess
    from bench.generate import generate_warehouse, load_sqlite

    companies, customers = generate_warehouse(30, seed=11, bad_ratio=0.0)
    warehouse = tmp_path / "warehouse.db"
    load_sqlite(warehouse, companies, customers)
    events_file = tmp_path / "openlineage.jsonl"
    home = tmp_path / "home"
    home.mkdir()
    with SandboxProcess(tmp_path / "sandbox.db", credentials=[TILL]) as sandbox:
        env = airflow_env(
            home, {"conn_type": "sqlite", "host": str(warehouse)}, sandbox.url,
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
                {"type": "file", "log_file_path": str(events_file), "append": True}),
            AIRFLOW__OPENLINEAGE__NAMESPACE="associate-test",
        )
        migrate(env)
        run = run_dag(env, conf={"mode": "full"})
        capillary = sandbox.url.rstrip("/")
    assert run.state == "success", run.log[-3000:]

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    complete = {event["job"]["name"].split(".", 1)[1]: event for event in events
                if event.get("eventType") == "COMPLETE" and "." in event["job"]["name"]}
    assert {"extract", "validate", "ensure_companies", "post", "write_back"} <= set(complete), sorted(complete)
    assert all(event["job"]["namespace"] == "associate-test" for event in complete.values())

    db = f"sqlite://{warehouse}"
    assert datasets(complete["extract"], "inputs") >= {(db, "customers"), (db, "fleet_companies")}
    assert (db, "associate_quarantine") in datasets(complete["validate"], "outputs")
    assert (capillary, "v2/companies") in datasets(complete["ensure_companies"], "outputs")
    assert datasets(complete["post"], "outputs") >= {(capillary, "v2/customers/bulk"), (db, "associate_sync_state")}
    assert datasets(complete["write_back"], "outputs") >= {
        (db, "associate_sync_results"), (db, "associate_warnings"), (db, "associate_sync_state")}
    # The START events name the same datasets: a lineage backend sees them while the task runs.
    started = [event for event in events if event.get("eventType") == "START"
               and event["job"]["name"].endswith(".post")]
    assert started and (capillary, "v2/customers/bulk") in datasets(started[0], "outputs")
