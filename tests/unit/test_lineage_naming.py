"""OpenLineage dataset naming: warehouse tables as the SQL providers name them, Capillary APIs by cluster URL."""

from __future__ import annotations

import json

import pytest

from associate import lineage


@pytest.fixture(autouse=True)
def fresh_namespaces():
    lineage.warehouse_namespace.cache_clear()
    yield
    lineage.warehouse_namespace.cache_clear()


def set_conn(monkeypatch, conn_id: str, conn: dict) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def names(datasets) -> set[tuple[str, str]]:
    return {(dataset.namespace, dataset.name) for dataset in datasets}


def test_a_sqlite_warehouse_is_named_by_its_file(monkeypatch, tmp_path):
    conn_id = set_conn(monkeypatch, "wh_lite", {"conn_type": "sqlite", "host": str(tmp_path / "w.db")})

    dataset = lineage.warehouse_dataset(conn_id, "customers")

    assert (dataset.namespace, dataset.name) == (f"sqlite://{tmp_path / 'w.db'}", "customers")


def test_a_postgres_warehouse_is_named_as_the_postgres_provider_names_it(monkeypatch):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    # The hook asks the server for its current schema; there is no server here.
    monkeypatch.setattr(PostgresHook, "get_openlineage_default_schema", lambda self: "public")
    conn_id = set_conn(monkeypatch, "wh_pg", {"conn_type": "postgres", "host": "db.example.com", "schema": "crm"})

    dataset = lineage.warehouse_dataset(conn_id, "fleet_companies")

    assert (dataset.namespace, dataset.name) == ("postgres://db.example.com:5432", "crm.public.fleet_companies")


def test_a_mysql_warehouse_is_named_by_host_port_and_database(monkeypatch):
    conn_id = set_conn(monkeypatch, "wh_my", {"conn_type": "mysql", "host": "db.example.com", "schema": "crm"})

    dataset = lineage.warehouse_dataset(conn_id, "customers")

    assert (dataset.namespace, dataset.name) == ("mysql://db.example.com:3306", "crm.customers")


@pytest.mark.parametrize("conn, namespace", [
    ({"conn_type": "http", "host": "http://127.0.0.1:8081"}, "http://127.0.0.1:8081"),
    ({"conn_type": "capillary", "host": "eu.api.capillarytech.com"}, "https://eu.api.capillarytech.com"),
])
def test_a_capillary_api_is_named_by_its_cluster_url(monkeypatch, conn, namespace):
    conn_id = set_conn(monkeypatch, "cap_ol", {**conn, "login": "till", "password": "secret"})

    dataset = lineage.capillary_dataset(conn_id, lineage.CUSTOMERS_API)

    assert (dataset.namespace, dataset.name) == (namespace, "v2/customers/bulk")


def test_each_task_reports_what_it_reads_and_writes(monkeypatch, tmp_path):
    warehouse = set_conn(monkeypatch, "wh_tasks", {"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    capillary = set_conn(monkeypatch, "cap_tasks", {"conn_type": "http", "host": "https://apac.example.com"})
    db, api = f"sqlite://{tmp_path / 'w.db'}", "https://apac.example.com"

    def of(task_id):
        found = lineage.task_lineage(task_id, warehouse_conn_id=warehouse, capillary_conn_id=capillary)
        return names(found.inputs), names(found.outputs)

    assert of("extract") == ({(db, "customers"), (db, "fleet_companies")}, set())
    recorded = {(db, "associate_sync_results"), (db, "associate_warnings"), (db, "associate_sync_state")}
    assert of("ensure_companies")[1] == {(api, "v2/companies")} | recorded
    assert of("post")[1] == {(api, "v2/customers/bulk")} | recorded
    assert of("write_back")[1] == recorded
    assert of("report") == (set(), set())


def test_the_operators_answer_the_provider_with_their_datasets(monkeypatch, tmp_path):
    from associate.operators import AssociateCustomersOperator

    warehouse = set_conn(monkeypatch, "wh_op", {"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    capillary = set_conn(monkeypatch, "cap_op", {"conn_type": "http", "host": "https://apac.example.com"})
    post = AssociateCustomersOperator(task_id="post", payload_uri="p", outcome_uri="o",
                                      capillary_conn_id=capillary, warehouse_conn_id=warehouse)

    found = post.get_openlineage_facets_on_complete(task_instance=None)

    assert ("https://apac.example.com", "v2/customers/bulk") in names(found.outputs)
