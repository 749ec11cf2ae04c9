"""AssociateCustomersOperator (send_payload_chunk) and ensure_companies_from_frame, run for real against the sandbox."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from associate import staged, staging
from associate.company_requests import ensure_companies_from_frame
from associate.operators import AssociateCustomersOperator
from airflow.sdk import ObjectStoragePath

from associate.sending import part_uri
from test_hook import FAST_RETRIES, element, mobile_of, set_connection, start_sandbox, unique_mobile
from validation_cases import validated_customers

CONN = "capillary_op"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with start_sandbox(tmp_path_factory, "operators") as process:
        yield process


@pytest.fixture
def hook(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    return set_connection(monkeypatch, CONN, sandbox.url, batch_size=10, **FAST_RETRIES)


def companies_frame(*rows: tuple) -> pd.DataFrame:
    """A validated companies frame (tables.COMPANY_COLUMNS)."""
    return pd.DataFrame(
        [(ext, name, "code-association2", parent, fields, pd.Timestamp("2026-01-01", tz="UTC"))
         for ext, name, parent, fields in rows],
        columns=["company_external_id", "company_name", "hierarchy_code", "parent_company_external_id",
                 "extended_fields", "updated_at"],
    )


@pytest.fixture
def company(hook):
    external_id = f"FLEET-{unique_mobile()[-7:]}"
    outcomes = ensure_companies_from_frame(hook, companies_frame((external_id, "Fleet", None, '{"region": "north"}')))
    assert outcomes["status"].tolist() == ["success"]
    return external_id


def write_chunk(tmp_path, rows: list[tuple], row_group_size: int | None = None) -> str:
    """Stage a payload chunk: rows of (batch_no, entity_key, element or raw text), in row groups of ``row_group_size``."""
    import pyarrow as pa

    frame = pd.DataFrame(
        [(no, key, body if isinstance(body, str) else json.dumps(body), f"hash-{key}", "POST", "INSTORE", None)
         for no, key, body in rows],
        columns=list(staged.CHUNK.columns),
    )
    uri = "file://" + str(tmp_path / "payloads" / "chunk-000.parquet")
    if row_group_size is None:
        return staging.write_frame(frame, uri)
    return staging.write_table(pa.Table.from_pandas(frame, preserve_index=False), uri, row_group_size=row_group_size)


def run_operator(payload_uri: str, outcome_uri: str, run_id: str = "manual__2026-11-25T00:00:00+00:00",
                 warehouse_conn_id: str | None = None) -> pd.DataFrame:
    op = AssociateCustomersOperator(task_id="associate", payload_uri=payload_uri, outcome_uri=outcome_uri,
                                    capillary_conn_id=CONN, warehouse_conn_id=warehouse_conn_id)
    assert op.execute({"run_id": run_id}) == outcome_uri
    return staging.read_frame(outcome_uri).set_index("entity_key")


def fleet_chunk(tmp_path, company: str):
    """Batch 0: two fleet admins; batch 1: members of the first, a poisoned and a broken row."""
    admin = element(role="FA", company=company)
    other = element(role="FA", company=company)
    members = [element(role="FC", company=company, parent_mobile=mobile_of(admin)) for _ in range(2)]
    poisoned = element(role="FC", company=company, parent_mobile=mobile_of(admin), loyaltyInfo="x")
    uri = write_chunk(tmp_path, [
        (0, "admin", admin),
        (0, "other", other),
        (1, "member-1", members[0]),
        (1, "poisoned", poisoned),
        (1, "member-2", members[1]),
        (1, "broken", "{not json"),
    ])
    mobiles = {"admin": mobile_of(admin), "other": mobile_of(other),
               "member-1": mobile_of(members[0]), "member-2": mobile_of(members[1])}
    return uri, mobiles


def test_operator_sends_a_chunk_and_stages_one_outcome_per_customer(hook, company, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    payload_uri, mobiles = fleet_chunk(tmp_path, company)
    outcome_uri = "file://" + str(tmp_path / "outcomes" / "chunk-000.parquet")
    out = run_operator(payload_uri, outcome_uri)

    assert sorted(out.index) == sorted(["admin", "other", "member-1", "member-2", "poisoned", "broken"])
    client = hook.get_conn()
    for key, mobile in mobiles.items():
        assert out.loc[key, "status"] == "success", (key, out.loc[key, "error_message"])
        assert out.loc[key, "capillary_id"] == client.lookup_customer("mobile", mobile)
    member = client.customer_details("mobile", mobiles["member-1"])["associationDetails"]
    assert member["parentCustomerId"] == out.loc["admin", "capillary_id"]
    assert member["fleetCompany"]["externalId"] == company

    assert out.loc["poisoned", "status"] == "failed" and out.loc["poisoned", "error_code"] == 400
    assert pd.isna(out.loc["poisoned", "capillary_id"]) and out.loc["poisoned", "attempts"] > 1
    assert out.loc["broken", "status"] == "failed" and "not valid JSON" in out.loc["broken", "error_message"]
    assert out.loc["broken", "attempts"] == 0

    assert out.loc["admin", "payload_hash"] == "hash-admin" and out.loc["broken", "payload_hash"] == "hash-broken"
    assert str(out["capillary_id"].dtype) == "Int64" and str(out["error_code"].dtype) == "Int64"
    assert str(out["synced_at"].dt.tz) == "UTC"
    assert all(json.loads(w) == [] for w in out["warnings"])

    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Batch ")]
    assert len(progress) == 2 and progress[-1].startswith("Batch 2/2") and "customers/s" in progress[-1]
    assert not any(m in caplog.text for m in mobiles.values())

    # The task's time with Capillary: batch 0 is one call, batch 1 five ([m1 p m2] bisected).
    timing = staging.read_json(staging.run_path("manual__2026-11-25T00:00:00+00:00", "timing", "post-0.json"))
    assert timing["requests"] == 6 and timing["http_429"] == 0
    assert timing["api_seconds"] > 0 and timing["budget_wait_seconds"] >= 0
    assert "Capillary: 6 requests, " in caplog.text and " s waiting for the rate budget" in caplog.text


def test_warnings_are_kept_as_masked_json(hook, tmp_path):
    mobile = unique_mobile()
    body = element(mobile)
    body["profiles"][0]["commChannels"].append({"type": "mobile", "value": "12ab", "primary": False})
    out = run_operator(write_chunk(tmp_path, [(0, "warned", body)]),
                       "file://" + str(tmp_path / "outcomes" / "warned.parquet"))
    assert out.loc["warned", "status"] == "warning"
    assert [w["code"] for w in json.loads(out.loc["warned", "warnings"])] == [8058]


def test_a_retried_task_skips_batches_already_recorded(hook, sandbox, company, tmp_path):
    payload_uri, _ = fleet_chunk(tmp_path, company)
    outcome_uri = "file://" + str(tmp_path / "outcomes" / "chunk-000.parquet")
    first = run_operator(payload_uri, outcome_uri)
    # The task died after batch 0 was recorded: only its part survives.
    from airflow.sdk import ObjectStoragePath

    ObjectStoragePath(part_uri(outcome_uri, 1)).unlink()
    ObjectStoragePath(outcome_uri).unlink()
    before = sandbox.stats()["requests"]["POST /v2/customers/bulk"]
    second = run_operator(payload_uri, outcome_uri)
    after = sandbox.stats()["requests"]["POST /v2/customers/bulk"]
    sent = sum(after.values()) - sum(before.values())
    assert sent == 5  # batch 1 only: [m1 p m2] refused, [m1] ok, [p m2] refused, [p] refused, [m2] ok
    pd.testing.assert_series_equal(first["capillary_id"], second["capillary_id"])
    assert first.loc["admin", "synced_at"] == second.loc["admin", "synced_at"]  # not re-sent


def test_batches_answered_together_are_one_part_that_a_retried_task_resumes_from(hook, sandbox, company, tmp_path,
                                                                                  monkeypatch):
    from associate import sending

    monkeypatch.setattr(sending, "RECORD_GROUP_SECONDS", 60.0)  # however slow the machine, one group
    payload_uri = write_chunk(tmp_path, [(no, f"admin-{no}", element(role="FA", company=company)) for no in range(3)])
    outcome_uri = "file://" + str(tmp_path / "outcomes" / "chunk-000.parquet")
    first = run_operator(payload_uri, outcome_uri)
    parts = ObjectStoragePath(outcome_uri + ".parts")
    assert sorted(p.name for p in parts.iterdir()) == ["batch-00000.parquet"]
    # The task died after the group's part was staged (and a later part's writer mid-file).
    ObjectStoragePath(outcome_uri).unlink()
    (parts / "batch-00003.parquet.partial").write_bytes(b"PAR1")
    before = sum(sandbox.stats()["requests"]["POST /v2/customers/bulk"].values())
    second = run_operator(payload_uri, outcome_uri)
    assert sum(sandbox.stats()["requests"]["POST /v2/customers/bulk"].values()) == before  # nothing sent again
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("row_group_size", [None, 1], ids=["one-row-group", "a-row-group-a-row"])
def test_children_of_a_parent_that_failed_are_held_back_not_sent(hook, sandbox, company, tmp_path, caplog,
                                                                 row_group_size):
    caplog.set_level(logging.INFO)
    admin = element(role="FA", company=company)
    bad_parent = element(role="FA", company=company, loyaltyInfo="x")  # the sandbox refuses it (400)
    member = element(role="FC", company=company, parent_mobile=mobile_of(admin))
    orphan = element(role="FC", company=company, parent_mobile=mobile_of(bad_parent))
    grandchild = element(role="FC", company=company, parent_mobile=mobile_of(orphan))
    payload_uri = write_chunk(tmp_path, [
        (0, "admin", admin), (0, "bad-parent", bad_parent),
        (1, "member", member), (1, "orphan", orphan),
        (2, "grandchild", grandchild),
    ], row_group_size)
    before = bulk_calls(sandbox, "POST")
    out = run_operator(payload_uri, "file://" + str(tmp_path / "outcomes" / "held.parquet"))
    sent = bulk_calls(sandbox, "POST") - before

    assert out.loc["bad-parent", "status"] == "failed" and out.loc["bad-parent", "error_code"] == 400
    assert out.loc["member", "status"] == "success"
    for key, parent in (("orphan", "bad-parent"), ("grandchild", "orphan")):
        assert out.loc[key, "status"] == "failed" and pd.isna(out.loc[key, "error_code"])
        assert out.loc[key, "error_message"] == (
            f"not sent: parent {parent} failed in this run; it will be sent after its parent")
        assert out.loc[key, "attempts"] == 0 and pd.isna(out.loc[key, "capillary_id"])
    # Batch 0: [admin bad] refused, [admin] ok, [bad] refused; batch 1: [member] alone; batch 2: nothing.
    assert sent == 4
    client = hook.get_conn()
    assert client.lookup_customer("mobile", mobile_of(orphan)) is None
    assert client.lookup_customer("mobile", mobile_of(grandchild)) is None
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Batch ")]
    assert [p.split(":")[1].split(";")[0].strip() for p in progress] == [
        "2 customers, 1 failed", "2 customers, 1 failed", "1 customers, 1 failed"]


def test_independent_batches_travel_side_by_side_and_stay_in_order(hook, tmp_path):
    bodies = [element() for _ in range(9)]
    rows = [(i // 3, f"c{i}", body) for i, body in enumerate(bodies)]
    out = run_operator(write_chunk(tmp_path, rows), "file://" + str(tmp_path / "outcomes" / "par.parquet"))
    assert list(out.index) == [f"c{i}" for i in range(9)]
    assert out["capillary_id"].tolist() == [hook.get_conn().lookup_customer("mobile", mobile_of(b)) for b in bodies]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sync_state_is_recorded_batch_by_batch(hook, company, tmp_path, monkeypatch, request, backend):
    from associate import warehouse

    if backend == "sqlite":
        conn = {"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}
    else:
        url = request.getfixturevalue("pg_url")
        conn = url.replace("postgresql://", "postgresql://", 1)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_OP", json.dumps(conn) if isinstance(conn, dict) else conn)
    payload_uri, mobiles = fleet_chunk(tmp_path, company)
    out = run_operator(payload_uri, "file://" + str(tmp_path / "outcomes" / "state.parquet"),
                       run_id="scheduled__1", warehouse_conn_id="warehouse_op")
    state = warehouse.read_sync_state("warehouse_op", "customer").set_index("entity_key")
    assert set(state.index) == set(out.index)
    assert state.loc["admin", "capillary_id"] == out.loc["admin", "capillary_id"]
    assert state.loc["admin", "payload_hash"] == "hash-admin"
    assert state.loc["poisoned", "last_status"] == "failed"
    assert set(state["last_run_id"]) == {"scheduled__1"}


def test_a_retried_task_records_the_last_group_of_parts_its_killed_try_did_not(hook, sandbox, company, tmp_path,
                                                                               monkeypatch):
    import sqlite3

    from associate import tables, warehouse

    db = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_OP", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    payload_uri, _ = fleet_chunk(tmp_path, company)
    outcome_uri = "file://" + str(tmp_path / "outcomes" / "chunk-000.parquet")
    first = run_operator(payload_uri, outcome_uri, run_id="scheduled__1", warehouse_conn_id="warehouse_op")
    # The try was killed after both batches' parts were staged, before their one transaction
    # committed: the warehouse holds nothing of them, and the chunk's outcome is missing.
    with sqlite3.connect(db) as conn:
        for table in (tables.RESULTS_TABLE, tables.WARNINGS_TABLE, tables.STATE_TABLE):
            conn.execute(f"DELETE FROM {table}")
    ObjectStoragePath(outcome_uri).unlink()
    before = sum(sandbox.stats()["requests"]["POST /v2/customers/bulk"].values())
    second = run_operator(payload_uri, outcome_uri, run_id="scheduled__1", warehouse_conn_id="warehouse_op")

    assert sum(sandbox.stats()["requests"]["POST /v2/customers/bulk"].values()) == before  # nothing sent again
    assert second[staged.RECORDED].all()
    results = warehouse.read_table("warehouse_op", tables.RESULTS_TABLE, "scheduled__1").set_index("entity_key")
    assert sorted(results.index) == sorted(first.index)
    assert results.loc["admin", "capillary_id"] == first.loc["admin", "capillary_id"]
    state = warehouse.read_sync_state("warehouse_op", "customer").set_index("entity_key")
    assert sorted(state.index) == sorted(first.index) and state.loc["poisoned", "last_status"] == "failed"


def test_ensure_companies_from_frame_returns_outcome_rows(hook):
    tag = unique_mobile()[-7:]
    frame = companies_frame(
        (f"SUB-{tag}", "Sub", f"HOLD-{tag}", None),
        (f"HOLD-{tag}", "Holding", None, '{"tier": "gold"}'),
        (f"ODD-{tag}", "Odd", None, "[1, 2]"),
    )
    out = ensure_companies_from_frame(hook, frame).set_index("entity_key")
    assert out.loc[f"HOLD-{tag}", "action"] == "created" and out.loc[f"SUB-{tag}", "action"] == "created"
    assert out.loc[f"SUB-{tag}", "capillary_id"] == hook.get_conn().get_company(f"SUB-{tag}")["companyId"]
    assert out.loc[f"ODD-{tag}", "status"] == "failed" and "JSON object" in out.loc[f"ODD-{tag}", "error_message"]
    assert set(out["entity"]) == {"company"} and out["payload_hash"].notna().sum() == 2

    again = ensure_companies_from_frame(hook, frame.iloc[:2]).set_index("entity_key")
    assert set(again["action"]) == {"unchanged"}
    assert again["payload_hash"].tolist() == out.loc[again.index, "payload_hash"].tolist()


def test_ensure_companies_of_nothing_needs_no_connection():
    out = ensure_companies_from_frame(None, companies_frame())
    assert out.empty and list(out.columns) == list(staged.COMPANY_OUTCOMES.columns)


def test_companies_are_recorded_as_answered_and_a_retry_sends_only_what_was_not(hook, sandbox, tmp_path,
                                                                                  monkeypatch):
    from associate import tables, tasks, warehouse

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_OP", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    tag = unique_mobile()[-7:]
    frame = companies_frame((f"HOLD-{tag}", "Holding", None, None), (f"SUB-{tag}", "Sub", f"HOLD-{tag}", None),
                            (f"ODD-{tag}", "Odd", None, "[1, 2]"))
    run_id = "manual__2026-12-04T00:00:00+00:00"

    def ensure(rows: pd.DataFrame) -> pd.DataFrame:
        validated = {"companies": staging.write_frame(rows, staging.run_path(run_id, "valid", "companies.parquet"))}
        uri = tasks.ensure_companies(validated=validated, warehouse_conn_id="warehouse_op", capillary_conn_id=CONN,
                                     run_id=run_id, dry_run=False)
        return staging.read_frame(uri).set_index("entity_key")

    def results() -> pd.DataFrame:
        return warehouse.read_table("warehouse_op", tables.RESULTS_TABLE, run_id).set_index("entity_key")

    # A try killed after the holding company was answered: it is recorded, result and state.
    first = ensure(frame.iloc[:1])
    assert first[staged.RECORDED].tolist() == [True]
    assert results().loc[f"HOLD-{tag}", "capillary_id"] == first.loc[f"HOLD-{tag}", "capillary_id"]
    assert warehouse.read_sync_state("warehouse_op").set_index("entity_key").loc[f"HOLD-{tag}", "last_run_id"] == run_id

    posts = sandbox.stats()["requests"].get("POST /v2/companies", {})
    before = sum(posts.values())
    retry = ensure(frame)
    assert sum(sandbox.stats()["requests"]["POST /v2/companies"].values()) - before == 1  # the subsidiary alone
    assert retry.loc[f"HOLD-{tag}", "action"] == "answered in an earlier try"
    assert retry.loc[f"HOLD-{tag}", "capillary_id"] == first.loc[f"HOLD-{tag}", "capillary_id"]
    assert retry.loc[f"SUB-{tag}", "action"] == "created" and retry.loc[f"ODD-{tag}", "status"] == "failed"
    assert retry[staged.RECORDED].eq(True).all()

    # write_back finds every company recorded: it writes none again and drops none.
    written = tasks.write_back(run_id=run_id, warehouse_conn_id="warehouse_op",
                               company_outcomes=str(staging.run_path(run_id, "outcomes", "companies.parquet")),
                               customer_outcomes=[])
    assert written == {"results": 0, "warnings": 0, "recorded_as_answered": 3}
    out = results()
    assert out.index.is_unique and set(out.index) == {f"HOLD-{tag}", f"SUB-{tag}", f"ODD-{tag}"}
    assert out.loc[f"ODD-{tag}", "status"] == "failed" and "JSON object" in out.loc[f"ODD-{tag}", "error_message"]


def run_pipeline(tmp_path, run_id: str, customers: pd.DataFrame, companies: pd.DataFrame, *,
                 customer_keys: list[str] | None = None) -> pd.DataFrame:
    """detect_changes -> build_batches -> the operator per chunk -> write_back; this run's results."""
    from associate import tables, tasks, warehouse

    validated = {
        "customers": staging.write_frame(customers, staging.run_path(run_id, "valid", "customers.parquet")),
        "companies": staging.write_frame(companies, staging.run_path(run_id, "valid", "companies.parquet")),
    }
    company_outcomes = staging.write_frame(staged.COMPANY_OUTCOMES.empty(),
                                           staging.run_path(run_id, "outcomes", "companies.parquet"))
    to_send = tasks.detect_changes(validated=validated, company_outcomes=company_outcomes,
                                   warehouse_conn_id="warehouse_op", run_id=run_id,
                                   customer_keys=customer_keys, dry_run=False)
    chunks = tasks.build_batches(changes=to_send, run_id=run_id, batch_size=10)
    outcomes = [AssociateCustomersOperator(task_id="associate", capillary_conn_id=CONN, warehouse_conn_id="warehouse_op",
                                           **chunk).execute({"run_id": run_id}) for chunk in chunks]
    tasks.write_back(run_id=run_id, warehouse_conn_id="warehouse_op", company_outcomes=company_outcomes,
                     customer_outcomes=outcomes)
    return warehouse.outputs.read_table("warehouse_op", tables.RESULTS_TABLE, run_id).set_index("entity_key")


@pytest.fixture
def sandbox_updates(sandbox):
    """Skip where the sandbox has no ``PUT /v2/customers/bulk`` yet (it comes with the sandbox's own branch)."""
    import requests
    from sandbox_support import basic_header

    answer = requests.put(f"{sandbox.url}/v2/customers/bulk?source=INSTORE", json=[], headers=basic_header(), timeout=10)
    if answer.status_code == 405:
        pytest.skip("this sandbox does not answer PUT /v2/customers/bulk yet")


def bulk_calls(sandbox, method: str) -> int:
    return sum(sandbox.stats()["requests"].get(f"{method} /v2/customers/bulk", {}).values())


def test_changed_customers_are_updated_and_an_association_that_cannot_move_is_held_back(
        hook, sandbox, sandbox_updates, company, tmp_path, monkeypatch):
    from associate import warehouse

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_OP", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    monkeypatch.setenv("ASSOCIATE_REPORTS_DIR", str(tmp_path / "reports"))
    companies = companies_frame((company, "Fleet", None, None))
    admin, driver, solo = unique_mobile(), unique_mobile(), unique_mobile()
    rows = {
        "admin": {"customer_key": "admin", "mobile": admin, "first_name": "Asha", "company_external_id": company,
                  "role_code": "FA"},
        "driver": {"customer_key": "driver", "mobile": driver, "first_name": "Ravi", "company_external_id": company,
                   "role_code": "FC", "parent_customer_key": "admin"},
        "solo": {"customer_key": "solo", "mobile": solo, "first_name": "Sam", "company_external_id": company,
                 "role_code": "FA"},
    }
    posts, puts = bulk_calls(sandbox, "POST"), bulk_calls(sandbox, "PUT")
    first = run_pipeline(tmp_path, "run-1", validated_customers(list(rows.values())), companies)
    assert set(first["status"]) == {"success"}, first[["status", "error_code", "error_message"]]
    assert bulk_calls(sandbox, "PUT") == puts and bulk_calls(sandbox, "POST") > posts  # all new: registered

    # The driver's name changes: an update (PUT). Solo's role changes: Capillary refuses that, held back.
    rows["driver"]["first_name"] = "Ravindra"
    rows["solo"]["role_code"] = "FC"
    puts = bulk_calls(sandbox, "PUT")
    second = run_pipeline(tmp_path, "run-2", validated_customers(list(rows.values())), companies)
    assert sorted(second.index) == ["driver", "solo"]
    assert second.loc["driver", "status"] == "success", second.loc["driver", "error_message"]
    assert bulk_calls(sandbox, "PUT") == puts + 1
    assert hook.get_conn().customer_details("mobile", driver)["profiles"][0]["firstName"] == "Ravindra"
    assert second.loc["solo", "status"] == "failed" and second.loc["solo", "error_code"] == 1627
    assert second.loc["solo", "error_message"] == (
        "role change FA -> FC is not allowed through this API: move the customer in Capillary first, "
        "then send it with customer_keys")
    assert hook.get_conn().customer_details("mobile", solo)["associationDetails"]["roleCode"] == "FA"
    state = warehouse.read_sync_state("warehouse_op", "customer").set_index("entity_key")
    assert state.loc["solo", "role_code"] == "FA" and state.loc["solo", "capillary_id"] == first.loc["solo", "capillary_id"]
    assert state.loc["driver", ["hierarchy_code", "role_code", "company_external_id"]].tolist() == [
        "code-association2", "FC", company]

    # The next run holds it back again; a forced run sends it (PUT) and the API decides.
    customers = validated_customers(list(rows.values()))
    assert run_pipeline(tmp_path, "run-3", customers, companies).loc["solo", "error_code"] == 1627
    forced = run_pipeline(tmp_path, "run-4", customers, companies, customer_keys=["solo"])
    assert list(forced.index) == ["solo"] and forced.loc["solo", "error_code"] == 1627
    assert bulk_calls(sandbox, "PUT") == puts + 2


def test_a_registration_that_kept_other_details_is_sent_again_as_an_update(
        hook, sandbox, sandbox_updates, company, tmp_path, monkeypatch):
    from associate import staged as formats
    from associate import warehouse
    from associate.warehouse.dialect import connect

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_OP", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    monkeypatch.setenv("ASSOCIATE_REPORTS_DIR", str(tmp_path / "reports"))
    companies = companies_frame((company, "Fleet", None, None))
    row = {"customer_key": "kept", "mobile": unique_mobile(), "first_name": "Old", "company_external_id": company,
           "role_code": "FA"}
    run_pipeline(tmp_path, "run-1", validated_customers([row]), companies)
    # The state is lost (a run killed after Capillary stored the customer): the next run registers again.
    with connect("warehouse_op") as (conn, _):
        conn.execute("DELETE FROM associate_sync_state WHERE entity_key = 'kept'")
    row["first_name"] = "New"
    again = run_pipeline(tmp_path, "run-2", validated_customers([row]), companies)
    assert again.loc["kept", "status"] == "warning"  # registered already, names kept: no duplicate
    state = warehouse.read_sync_state("warehouse_op", "customer").set_index("entity_key")
    assert state.loc["kept", "payload_hash"].startswith(formats.DETAILS_KEPT_PREFIX)
    puts = bulk_calls(sandbox, "PUT")
    third = run_pipeline(tmp_path, "run-3", validated_customers([row]), companies)
    assert third.loc["kept", "status"] == "success" and bulk_calls(sandbox, "PUT") == puts + 1
    assert hook.get_conn().customer_details("mobile", row["mobile"])["profiles"][0]["firstName"] == "New"


def send_chunks(run_id: str, customers: pd.DataFrame, companies: pd.DataFrame, company_outcomes: pd.DataFrame,
                *, record: bool = True) -> tuple[list[str], str, list[dict]]:
    """detect_changes -> build_batches -> the operator per chunk (recording batches when ``record``); the chunks too."""
    from associate import tasks

    outcomes_uri = staging.write_frame(company_outcomes, staging.run_path(run_id, "outcomes", "companies.parquet"))
    validated = {
        "customers": staging.write_frame(customers, staging.run_path(run_id, "valid", "customers.parquet")),
        "companies": staging.write_frame(companies, staging.run_path(run_id, "valid", "companies.parquet")),
    }
    to_send = tasks.detect_changes(validated=validated, company_outcomes=outcomes_uri, warehouse_conn_id="warehouse_op",
                                   run_id=run_id, customer_keys=None, dry_run=False)
    chunks = tasks.build_batches(changes=to_send, run_id=run_id, batch_size=2)
    outcomes = [AssociateCustomersOperator(task_id="associate", capillary_conn_id=CONN,
                                           warehouse_conn_id="warehouse_op" if record else None,
                                           **chunk).execute({"run_id": run_id}) for chunk in chunks]
    return outcomes, outcomes_uri, chunks


def test_write_back_writes_only_what_no_batch_recorded(hook, company, tmp_path, monkeypatch):
    from associate import reconcile, tables, tasks, warehouse
    from associate.warehouse.dialect import connect

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_OP", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    monkeypatch.setenv("ASSOCIATE_REPORTS_DIR", str(tmp_path / "reports"))
    gone = f"GONE-{unique_mobile()[-7:]}"
    company_outcomes = pd.concat([
        staged.outcome_frame([staged.outcome_record("company", company, "success", capillary_id=1,
                                                    payload_hash="h", synced_at=pd.Timestamp.now(tz="UTC"))]),
        reconcile.not_sent_outcomes([gone], ["refused"], entity="company"),
    ], ignore_index=True)
    rows = [{"customer_key": "admin", "mobile": unique_mobile(), "company_external_id": company, "role_code": "FA"}]
    rows += [{"customer_key": f"driver-{i}", "mobile": unique_mobile(), "company_external_id": company,
              "role_code": "FC", "parent_customer_key": "admin"} for i in range(4)]
    rows += [{"customer_key": "stranded", "mobile": unique_mobile(), "company_external_id": gone, "role_code": "FA"}]
    customers = validated_customers(rows)
    sent = {"admin", *(f"driver-{i}" for i in range(4))}

    def results(run_id: str) -> pd.DataFrame:
        return warehouse.read_table("warehouse_op", tables.RESULTS_TABLE, run_id)

    def mark_recorded_rows(run_id: str) -> None:
        # A note on every row post recorded: a write-back that rewrote them would wipe it.
        with connect("warehouse_op") as (conn, _):
            conn.execute("UPDATE associate_sync_results SET error_message = 'recorded by post' "
                         "WHERE run_id = ? AND entity = 'customer'", (run_id,))

    validated_companies = companies_frame((company, "Fleet", None, None))
    outcomes, companies, chunks = send_chunks("run-rec", customers, validated_companies, company_outcomes)
    assert set(results("run-rec")["entity_key"]) == sent  # each batch recorded as it was answered
    mark_recorded_rows("run-rec")
    for _ in range(2):  # a retried write_back writes the same rows again
        written = tasks.write_back(run_id="run-rec", warehouse_conn_id="warehouse_op", company_outcomes=companies,
                                   customer_outcomes=outcomes)
        assert written == {"results": 3, "warnings": 0, "recorded_as_answered": 5}  # 2 companies + 1 held back
        out = results("run-rec").set_index("entity_key")
        assert out.index.is_unique and set(out.index) == sent | {company, gone, "stranded"}
        assert set(out.loc[sorted(sent), "error_message"]) == {"recorded by post"}
        assert out.loc["stranded", "status"] == "failed" and out.loc[gone, "status"] == "failed"
    state = warehouse.read_sync_state("warehouse_op").set_index("entity_key")
    assert state.loc["stranded", "last_status"] == "failed" and state.loc[company, "last_status"] == "success"

    # A key both held back and sent keeps its sent row: write_back reads the chunks whole then.
    held_uri = staging.run_path("run-rec", "outcomes", "held_back.parquet")
    held = staging.read_frame(held_uri)
    staging.write_frame(pd.concat([held, reconcile.not_sent_outcomes(["admin"], ["held back"])], ignore_index=True),
                        held_uri)
    written = tasks.write_back(run_id="run-rec", warehouse_conn_id="warehouse_op", company_outcomes=companies,
                               customer_outcomes=outcomes)
    assert written == {"results": 3, "warnings": 0, "recorded_as_answered": 5}
    out = results("run-rec").set_index("entity_key")
    assert out.loc["admin", "status"] == "success" and out.loc["admin", "error_message"] == "recorded by post"
    staging.write_frame(held, held_uri)

    # post killed after a batch's part was staged, before it was recorded: its retry records it.
    last_part = sorted(ObjectStoragePath(outcomes[-1] + ".parts").iterdir())[-1]
    lost = set(staging.read_frame(str(last_part))["entity_key"])
    with connect("warehouse_op") as (conn, _):
        conn.execute(f"DELETE FROM associate_sync_results WHERE run_id = 'run-rec' AND entity_key IN "
                     f"({', '.join('?' * len(lost))})", sorted(lost))
    ObjectStoragePath(outcomes[-1]).unlink()
    AssociateCustomersOperator(task_id="associate", capillary_conn_id=CONN, warehouse_conn_id="warehouse_op",
                               **chunks[-1]).execute({"run_id": "run-rec"})
    assert lost <= set(results("run-rec")["entity_key"])
    tasks.write_back(run_id="run-rec", warehouse_conn_id="warehouse_op", company_outcomes=companies,
                     customer_outcomes=outcomes)
    out = results("run-rec")
    assert out["entity_key"].is_unique and len(out) == len(sent) + 3

    # post without a warehouse connection records nothing: write_back writes every row.
    rows = [{**row, "mobile": unique_mobile(), "customer_key": row["customer_key"] + "-2",
             "parent_customer_key": row.get("parent_customer_key") and row["parent_customer_key"] + "-2"}
            for row in rows]
    outcomes, companies, _ = send_chunks("run-norec", validated_customers(rows), validated_companies, company_outcomes,
                                      record=False)
    assert results("run-norec").empty
    written = tasks.write_back(run_id="run-norec", warehouse_conn_id="warehouse_op", company_outcomes=companies,
                               customer_outcomes=outcomes)
    assert written == {"results": 8, "warnings": 0, "recorded_as_answered": 0}
    out = results("run-norec")
    assert out["entity_key"].is_unique and len(out) == 8 and set(out["status"]) == {"success", "failed"}


def fleet_hierarchies(tag: str, companies: int) -> list[dict]:
    """Per company one SFA, three FAs under it and ten FCs under those: three depths."""
    rows = []
    for c in range(companies):
        company, top = f"MULTI-{tag}-{c}", f"{tag}-{c}-sfa"
        rows.append({"customer_key": top, "mobile": unique_mobile(), "company_external_id": company,
                     "role_code": "SFA"})
        for a in range(3):
            admin = f"{tag}-{c}-fa{a}"
            rows.append({"customer_key": admin, "mobile": unique_mobile(), "company_external_id": company,
                         "role_code": "FA", "parent_customer_key": top})
            rows += [{"customer_key": f"{admin}-fc{d}", "mobile": unique_mobile(), "company_external_id": company,
                      "role_code": "FC", "parent_customer_key": admin} for d in range(4 if a == 0 else 3)]
    return rows


def settled_bulk_posts(sandbox) -> int:
    """POST bulk calls the sandbox counted, once its counters stop moving (it counts after replying)."""
    import time

    last = bulk_calls(sandbox, "POST")
    for _ in range(50):
        time.sleep(0.05)
        now = bulk_calls(sandbox, "POST")
        if now == last:
            return now
        last = now
    return last


@pytest.mark.parametrize(("max_chunks", "in_send_order"), [(1, False), (3, False), (3, True)])
def test_bulk_calls_stay_at_the_fewest_across_chunks_sent_side_by_side(hook, sandbox, tmp_path, monkeypatch,
                                                                       max_chunks, in_send_order):
    """Sum over depths of ceil(customers / batch size), plus at most one partial batch per depth and chunk.

    ``in_send_order``: detect_changes builds the elements in send order, and the chunks are
    ranges of its file instead of copies.
    """
    import math
    from concurrent.futures import ThreadPoolExecutor

    from associate import tasks

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_OP", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    monkeypatch.setenv("ASSOCIATE_REPORTS_DIR", str(tmp_path / "reports"))
    from associate import chunking

    # Split this small run as a large one is split.
    monkeypatch.setattr(chunking, "CHUNK_MIN_BATCHES", 1)
    monkeypatch.setattr(chunking, "CHUNK_FULL_BATCHES", 1)
    monkeypatch.setattr(chunking, "MAX_CHUNKS", max_chunks)
    tag, batch_size, run_id = unique_mobile()[-6:], 4, f"multi-{max_chunks}-{in_send_order}"
    rows = fleet_hierarchies(tag, companies=6)
    companies = companies_frame(*[(f"MULTI-{tag}-{c}", f"Fleet {c}", None, None) for c in range(6)])
    company_outcomes = ensure_companies_from_frame(hook, companies)
    assert set(company_outcomes["status"]) == {"success"}
    validated = {
        "customers": staging.write_frame(validated_customers(rows), staging.run_path(run_id, "valid", "customers.parquet")),
        "companies": staging.write_frame(companies, staging.run_path(run_id, "valid", "companies.parquet")),
    }
    to_send = tasks.detect_changes(
        validated=validated, warehouse_conn_id="warehouse_op", run_id=run_id, customer_keys=None, dry_run=False,
        company_outcomes=staging.write_frame(company_outcomes, staging.run_path(run_id, "outcomes", "companies.parquet")),
        batch_size=batch_size if in_send_order else None)
    chunks = tasks.build_batches(changes=to_send, run_id=run_id, batch_size=batch_size, max_chunks=max_chunks)
    assert len(chunks) == max_chunks
    # Ranges of the staged elements (nothing copied), or chunk files of their own.
    assert all(chunk["payload_uri"] == to_send for chunk in chunks) == in_send_order
    assert [chunk.get("rows") is not None for chunk in chunks] == [in_send_order] * max_chunks
    assert staging.run_path(run_id, "payloads").exists() != in_send_order

    depths = staging.read_frame(to_send)["depth"].value_counts()
    assert sorted(depths.index) == [0, 1, 2]
    fewest = sum(math.ceil(n / batch_size) for n in depths)
    before = settled_bulk_posts(sandbox)
    # The chunks go side by side, as mapped post tasks on several workers do.
    with ThreadPoolExecutor(max_workers=len(chunks)) as workers:
        uris = list(workers.map(lambda chunk: AssociateCustomersOperator(
            task_id="associate", capillary_conn_id=CONN, **chunk).execute({"run_id": run_id}), reversed(chunks)))
    sent = settled_bulk_posts(sandbox) - before

    out = pd.concat([staging.read_frame(uri) for uri in uris]).set_index("entity_key")
    assert len(out) == len(rows) and set(out["status"]) == {"success"}, out["error_message"].dropna().head()
    # Parents before children in every chunk: each FC hangs under its FA in Capillary.
    client = hook.get_conn()
    for row in rows[:5]:
        details = client.customer_details("mobile", row["mobile"])["associationDetails"]
        parent = row.get("parent_customer_key")
        assert details.get("parentCustomerId") == (out.loc[parent, "capillary_id"] if parent else None)
    if max_chunks == 1:
        assert sent == fewest
    else:
        assert fewest <= sent <= fewest + max_chunks * len(depths)
