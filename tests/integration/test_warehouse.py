"""associate.warehouse against a real SQLite file, a real PostgreSQL database and a real MariaDB database."""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime, timezone

import pandas as pd
import pytest

from associate import tables, warehouse
from associate.exceptions import ExtractError
from associate.warehouse import dialect, extraction, outputs
from bench.loaders import load_frames

START = datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
END = datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc)
OLD = "2025-06-01T00:00:00Z"


def _company(key, parent=None, updated_at=OLD, hierarchy="code-association2"):
    return dict(company_external_id=key, company_name=f"{key} Ltd", hierarchy_code=hierarchy,
                parent_company_external_id=parent, extended_fields=None, updated_at=updated_at)


def _customer(key, company, parent=None, updated_at=OLD, role="FC", **extra):
    row = {c: None for c in tables.CUSTOMER_COLUMNS}
    row.update(customer_key=key, first_name=f"First {key}", last_name="Last", mobile=None,
               email=f"{key}@example.com", loyalty_type="loyalty", company_external_id=company,
               role_code=role, parent_customer_key=parent, registered_at="2020-05-01T10:00:00+00:00",
               source="INSTORE", updated_at=updated_at)
    row.update(extra)
    return row


def sample_warehouse():
    """Companies HH > H > C1, C2, C3; customers a > b > c > g and a > s in C1, d > h and f in C2, e in C3."""
    companies = pd.DataFrame([
        _company("HH"), _company("H", parent="HH"), _company("C1", parent="H"), _company("C2"),
        _company("C3", updated_at="2026-01-01 00:30:00"),  # changed inside the interval
    ])
    customers = pd.DataFrame([
        _customer("a", "C1", role="GFA", first_name="राजेश", last_name="कुमार"),
        # changed exactly at the interval start, written with an offset
        _customer("b", "C1", parent="a", role="FA", updated_at="2026-01-01T05:30:00+05:30"),
        _customer("c", "C1", parent="b", first_name="王", last_name="小明"),
        _customer("g", "C1", parent="c"),
        _customer("s", "C1", parent="a", role="FA"),
        _customer("d", "C2", role="FA", updated_at="2026-01-01T01:00:00Z"),  # exactly at the end
        _customer("h", "C2", parent="d"),
        _customer("f", "C2", role="FA", updated_at="2025-12-31T23:59:59.998Z"),  # just before start
        _customer("e", "C3", role="FA", program_id=7, tier_number=2),
    ])
    return companies, customers


CONN_FIXTURES = {"sqlite": "sqlite_conn", "postgres": "pg_conn", "mariadb": "mariadb_conn"}


@pytest.fixture(params=list(CONN_FIXTURES))
def conn_id(request):
    return request.getfixturevalue(CONN_FIXTURES[request.param])


def keys(frame, column="customer_key"):
    return set(frame[column])


def utc(value) -> pd.Timestamp:
    """A stored time as a UTC instant: MariaDB's DATETIME gives it back naive, holding UTC."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@pytest.mark.parametrize("backend,as_text", [("sqlite", True), ("postgres", False), ("postgres", True),
                                             ("mariadb", False), ("mariadb", True)])
def test_incremental_extract_takes_interval_and_the_rows_around_it(request, backend, as_text):
    conn_id = request.getfixturevalue(CONN_FIXTURES[backend])
    companies, customers = sample_warehouse()
    load_frames(conn_id, companies, customers, timestamps_as_text=as_text)

    got = warehouse.extract(conn_id, tables.ENTITY_CUSTOMER, mode="incremental",
                            interval_start=START, interval_end=END)
    # b changed; a is its ancestor, c and g its descendants; e belongs to a company changed
    # in the interval. d (at the end edge) and f (before) are out, and so is s, a's other
    # child: a's child_count (b and s) is all validation needs of it.
    assert keys(got) == {"a", "b", "c", "g", "e"}
    assert dict(zip(got["customer_key"], got["child_count"])) == {"a": 2, "b": 1, "c": 1, "g": 0, "e": 0}
    got_companies = warehouse.extract(conn_id, tables.ENTITY_COMPANY, mode="incremental",
                                      interval_start=START, interval_end=END)
    assert keys(got_companies, "company_external_id") == {"C1", "H", "HH", "C3"}


def test_changed_share_counts_changed_customers_and_those_of_changed_companies(conn_id):
    companies, customers = sample_warehouse()
    load_frames(conn_id, companies, customers)
    # b changed itself, e through its company C3: 2 of 9 customers.
    assert warehouse.changed_share(conn_id, interval_start=START, interval_end=END) == pytest.approx(2 / 9)
    later = datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert warehouse.changed_share(conn_id, interval_start=later, interval_end=later.replace(hour=1)) == 0


def test_a_large_change_is_extracted_in_full_a_small_one_incrementally(sqlite_conn, tmp_path, monkeypatch):
    from associate import staging, tasks

    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    companies, customers = sample_warehouse()
    load_frames(sqlite_conn, companies, customers)
    run = {"warehouse_conn_id": sqlite_conn, "mode": "incremental", "interval_start": START, "interval_end": END}
    # 2 of 9 customers changed: above FULL_EXTRACT_SHARE, one full read beats the scope.
    assert 2 / 9 >= warehouse.FULL_EXTRACT_SHARE
    big = tasks.extract(run_id="r-big", **run)
    assert big["mode"] == "full" and big["counts"]["customers"] == 9
    monkeypatch.setattr(warehouse, "FULL_EXTRACT_SHARE", 0.5)
    small = tasks.extract(run_id="r-small", **run)
    assert small["mode"] == "incremental" and small["counts"]["customers"] == 5
    assert keys(staging.read_frame(small["customers"])) == {"a", "b", "c", "g", "e"}


def test_full_extract_gives_canonical_frames_with_names_intact(conn_id):
    companies, customers = sample_warehouse()
    load_frames(conn_id, companies, customers)

    got = warehouse.extract(conn_id, "customers", mode="full")
    assert list(got.columns) == list(tables.CUSTOMER_COLUMNS)
    assert len(got) == len(customers)
    by_key = got.set_index("customer_key")
    assert (by_key.loc["a", "first_name"], by_key.loc["a", "last_name"]) == ("राजेश", "कुमार")
    assert (by_key.loc["c", "first_name"], by_key.loc["c", "last_name"]) == ("王", "小明")
    assert str(got["program_id"].dtype) == "Int64"
    assert by_key.loc["e", "program_id"] == 7 and pd.isna(by_key.loc["a", "program_id"])
    assert by_key.loc["a", "mobile"] is None  # text nulls are None, not NaN
    assert utc(by_key.loc["b", "updated_at"]) == pd.Timestamp("2026-01-01T00:00:00Z")
    got_companies = warehouse.extract(conn_id, "companies", mode="full")
    assert list(got_companies.columns) == list(tables.COMPANY_COLUMNS)
    assert keys(got_companies, "company_external_id") == {"HH", "H", "C1", "C2", "C3"}


def test_manual_run_with_empty_interval_extracts_everything(sqlite_conn):
    companies, customers = sample_warehouse()
    load_frames(sqlite_conn, companies, customers)
    got = warehouse.extract(sqlite_conn, "customers", mode="incremental", interval_start=END, interval_end=END)
    assert len(got) == len(customers)
    assert warehouse.effective_mode("incremental", END, END) == "full"
    assert warehouse.effective_mode("incremental", START, END) == "incremental"


def test_url_encoded_sqlite_uri_connection_works(tmp_path, monkeypatch):
    path = tmp_path / "uri.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_URI", "sqlite://" + urllib.parse.quote(str(path), safe=""))
    companies, customers = sample_warehouse()
    load_frames("warehouse_uri", companies, customers)
    assert len(warehouse.extract("warehouse_uri", "companies", mode="full")) == 5
    assert path.exists()


def test_missing_column_error_names_column_and_file(sqlite_conn, tmp_path):
    companies, customers = sample_warehouse()
    load_frames(sqlite_conn, companies, customers)
    sql_dir = tmp_path / "sql"
    (sql_dir / "generic").mkdir(parents=True)
    (sql_dir / "generic" / "extract_customers.sql").write_text(
        "SELECT customer_key, first_name, 'x' AS extra_column FROM customers")
    with pytest.raises(ExtractError) as err:
        warehouse.extract(sqlite_conn, "customers", mode="full", sql_dir=sql_dir)
    message = str(err.value)
    assert "extract_customers.sql" in message
    missing = message.split("column(s) ")[1].split(" for customers")[0].split(", ")
    assert "mobile" in missing and "updated_at" in missing
    assert "customer_key" not in missing and "first_name" not in missing


def test_user_sql_in_dialect_folder_overrides_generic(sqlite_conn, tmp_path):
    companies, customers = sample_warehouse()
    load_frames(sqlite_conn, companies, customers)
    sql_dir = tmp_path / "sql"
    (sql_dir / "sqlite").mkdir(parents=True)
    columns = ", ".join(tables.COMPANY_COLUMNS)
    (sql_dir / "sqlite" / "extract_companies.sql").write_text(
        f"SELECT {columns}, 1 AS ignored FROM fleet_companies WHERE company_external_id LIKE 'C%'")
    got = warehouse.extract(sqlite_conn, "companies", mode="full", sql_dir=sql_dir)
    assert keys(got, "company_external_id") == {"C1", "C2", "C3"}
    assert list(got.columns) == list(tables.COMPANY_COLUMNS)


def test_an_optional_push_token_column_is_read_when_the_extract_returns_it(sqlite_conn, tmp_path):
    companies, customers = sample_warehouse()
    load_frames(sqlite_conn, companies, customers)
    sql_dir = tmp_path / "sql"
    (sql_dir / "sqlite").mkdir(parents=True)
    columns = ", ".join(tables.CUSTOMER_COLUMNS)
    (sql_dir / "sqlite" / "extract_customers.sql").write_text(
        f"SELECT {columns}, CASE WHEN customer_key = 'a' THEN 'fcm-a' END AS push_token FROM customers")
    got = warehouse.extract(sqlite_conn, "customers", mode="full", sql_dir=sql_dir).set_index("customer_key")
    assert got.loc["a", tables.CUSTOMER_PUSH_TOKEN] == "fcm-a" and got.loc["b", tables.CUSTOMER_PUSH_TOKEN] is None
    plain = warehouse.extract(sqlite_conn, "customers", mode="full")
    assert tables.CUSTOMER_PUSH_TOKEN not in plain.columns  # the contract's extract: no token, no column


def test_interval_edges_must_be_timestamps():
    with pytest.raises(ValueError, match="interval_start"):
        extraction.render_extract_sql("customers", "sqlite", mode="incremental",
                                      interval_start="2026-01-01'; DROP TABLE customers; --",
                                      interval_end=END)


def test_int_columns_that_do_not_parse_stay_raw_for_validation():
    rows = [[None] * len(tables.CUSTOMER_COLUMNS) for _ in range(2)]
    names = list(tables.CUSTOMER_COLUMNS)
    rows[0][names.index("program_id")], rows[1][names.index("program_id")] = "12", "twelve"
    rows[0][names.index("tier_number")], rows[1][names.index("tier_number")] = "3", 4.0
    frame = extraction.canonical_frame("customers", names, rows)
    assert frame["program_id"].tolist() == ["12", "twelve"]
    assert str(frame["tier_number"].dtype) == "Int64" and frame["tier_number"].tolist() == [3, 4]


def _results(run_id, keys_, status="success"):
    return pd.DataFrame({
        "entity": "customer", "entity_key": keys_, "status": status,
        "capillary_id": pd.array(range(1, len(keys_) + 1), dtype="Int64"),
        "error_code": pd.array([None] * len(keys_), dtype="Int64"), "error_message": None,
        "attempts": 1, "synced_at": pd.Timestamp("2026-01-01T00:10:00Z"),
    })


def test_output_tables_are_idempotent_on_rewrite(conn_id):
    warehouse.ensure_output_tables(conn_id)
    warehouse.ensure_output_tables(conn_id)  # a second time changes nothing
    warehouse.replace_run_rows(conn_id, tables.RESULTS_TABLE, "run-1", _results("run-1", ["a", "b"]))
    warehouse.replace_run_rows(conn_id, tables.RESULTS_TABLE, "run-2", _results("run-2", ["c"]))
    # A retry of run-1 rewrites its rows and leaves run-2 alone.
    warehouse.replace_run_rows(conn_id, tables.RESULTS_TABLE, "run-1", _results("run-1", ["a", "b", "x"]))
    rows = outputs.read_table(conn_id, tables.RESULTS_TABLE)
    assert sorted(rows[rows.run_id == "run-1"].entity_key) == ["a", "b", "x"]
    assert sorted(rows[rows.run_id == "run-2"].entity_key) == ["c"]
    assert utc(rows.synced_at.iloc[0]) == pd.Timestamp("2026-01-01T00:10:00Z")

    quarantine = pd.DataFrame([{
        "entity": "customer", "entity_key": "q1", "check": "mobile_valid", "column_name": "mobile",
        "reason": "mobile 91******4424 is not valid, कृपया", "quarantined_at": pd.Timestamp.now(tz="UTC"),
    }])
    for _ in range(2):
        warehouse.replace_run_rows(conn_id, tables.QUARANTINE_TABLE, "run-1", quarantine)
    got = outputs.read_table(conn_id, tables.QUARANTINE_TABLE, run_id="run-1")
    assert len(got) == 1 and got.iloc[0]["check"] == "mobile_valid" and got.iloc[0].reason.endswith("कृपया")

    warnings = pd.DataFrame([{"entity": "customer", "entity_key": "a", "capillary_id": 1, "code": 8056,
                              "message": "Invalid mobile"}])
    warehouse.replace_run_rows(conn_id, tables.WARNINGS_TABLE, "run-1", warnings)
    assert outputs.read_table(conn_id, tables.WARNINGS_TABLE).code.tolist() == [8056]


def _delete_plan(conn_id: str, table: str) -> str:
    """How the database would run record_batch's per-key DELETE on ``table``."""
    import os
    import sqlite3

    import psycopg2

    sql = f"DELETE FROM {table} WHERE run_id = %s AND entity = %s AND entity_key = %s"
    url = os.environ["AIRFLOW_CONN_WAREHOUSE_TEST"]
    if url.startswith("{"):
        with sqlite3.connect(json.loads(url)["host"]) as db:
            plan = db.execute("EXPLAIN QUERY PLAN " + sql.replace("%s", "?"), ("r", "customer", "k")).fetchall()
        return " ".join(str(row[-1]) for row in plan)
    with psycopg2.connect(url) as db, db.cursor() as cur:
        cur.execute("SET enable_seqscan = off")  # a tiny table: ask which index would be used
        cur.execute("EXPLAIN " + sql, ("r", "customer", "k"))
        return " ".join(row[0] for row in cur.fetchall())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("table", [tables.RESULTS_TABLE, tables.WARNINGS_TABLE])
def test_recording_a_batch_finds_each_key_by_index_not_by_scanning_the_run(request, backend, table):
    conn_id = request.getfixturevalue(CONN_FIXTURES[backend])
    # Tables made by an earlier version, with the run_id-only index, are upgraded too.
    warehouse.ensure_output_tables(conn_id)
    with dialect.connect(conn_id) as (conn, _):
        cur = conn.cursor()
        cur.execute(f"DROP INDEX ix_{table}_run_key")
        cur.execute(f"CREATE INDEX ix_{table}_run_id ON {table} (run_id)")
        cur.close()
    assert f"ix_{table}_run_id" in _delete_plan(conn_id, table)
    warehouse.ensure_output_tables(conn_id)
    plan = _delete_plan(conn_id, table)
    assert f"ix_{table}_run_key" in plan and f"ix_{table}_run_id" not in plan, plan
    assert "entity_key" in plan, f"the key is not part of the index search: {plan}"


@pytest.mark.parametrize("table", [tables.RESULTS_TABLE, tables.WARNINGS_TABLE])
def test_mariadb_finds_each_recorded_key_by_the_run_key_index(mariadb_conn, table):
    warehouse.ensure_output_tables(mariadb_conn)
    with dialect.connect(mariadb_conn) as (conn, _):
        cur = conn.cursor()
        # record_batch's form on MariaDB: one IN list of the batch's keys per entity.
        cur.execute(f"EXPLAIN DELETE FROM {table} WHERE run_id = %s AND entity = %s AND entity_key IN (%s, %s)",
                    ("r", "customer", "k1", "k2"))
        names = [d[0] for d in cur.description]
        plans = [dict(zip(names, row)) for row in cur.fetchall()]
        cur.close()
    assert [p["key"] for p in plans] == [f"ix_{table}_run_key"], plans


def test_empty_frame_clears_a_runs_rows(sqlite_conn):
    warehouse.ensure_output_tables(sqlite_conn)
    warehouse.replace_run_rows(sqlite_conn, tables.RESULTS_TABLE, "run-1", _results("run-1", ["a"]))
    warehouse.replace_run_rows(sqlite_conn, tables.RESULTS_TABLE, "run-1", _results("run-1", [])[0:0])
    assert outputs.read_table(sqlite_conn, tables.RESULTS_TABLE).empty


def test_one_recorder_records_batch_after_batch_and_outlives_a_dropped_connection(conn_id):
    warehouse.ensure_output_tables(conn_id)
    no_warnings = pd.DataFrame(columns=list(tables.OUTPUT_TABLES[tables.WARNINGS_TABLE]))

    def batch(keys_):
        state = pd.DataFrame([_state(k, f"h-{k}", "success", i + 1, "run-r") for i, k in enumerate(keys_)])
        return {"results": _results("run-r", keys_), "warnings": no_warnings, "state": state}

    with warehouse.BatchRecorder(conn_id, "run-r") as recorder:
        recorder.record(**batch(["a", "b"]))
        recorder._conn[0].close()  # the warehouse closed it between two batches (idle timeout, restart)
        recorder.record(**batch(["c"]))
        recorder.record(**batch(["a"]))  # a batch recorded again replaces its rows
    results = warehouse.read_table(conn_id, tables.RESULTS_TABLE)
    assert sorted(results.loc[results["run_id"] == "run-r", "entity_key"]) == ["a", "b", "c"]
    state = warehouse.read_sync_state(conn_id, "customer")
    assert set(state["entity_key"]) >= {"a", "b", "c"}


def _state(key, hash_, status, capillary_id, run_id):
    return {"entity": "customer", "entity_key": key, "payload_hash": hash_, "capillary_id": capillary_id,
            "last_status": status, "last_run_id": run_id,
            "last_synced_at": pd.Timestamp("2026-01-01T00:00:00Z")}


def test_sync_state_upsert_inserts_updates_and_keeps_known_ids(conn_id):
    assert warehouse.read_sync_state(conn_id).empty  # no table yet: nothing synced
    warehouse.ensure_output_tables(conn_id)
    first = pd.DataFrame([_state("a", "h1", "success", 11, "r1"), _state("b", "h1", "success", 12, "r1")])
    first["capillary_id"] = first["capillary_id"].astype("Int64")
    warehouse.upsert_sync_state(conn_id, first)
    second = pd.DataFrame([_state("a", "h2", "failed", None, "r2"), _state("c", "h3", "success", 13, "r2")])
    second["capillary_id"] = pd.array([None, 13], dtype="Int64")
    warehouse.upsert_sync_state(conn_id, second)
    company = pd.DataFrame([{**_state("C1", "hc", "success", 99, "r2"), "entity": "company"}])
    warehouse.upsert_sync_state(conn_id, company)

    state = warehouse.read_sync_state(conn_id, "customer").set_index("entity_key")
    assert sorted(state.index) == ["a", "b", "c"]
    assert state.loc["a", "payload_hash"] == "h2" and state.loc["a", "last_status"] == "failed"
    assert state.loc["a", "capillary_id"] == 11  # a failed re-send does not forget the id
    assert state.loc["a", "last_run_id"] == "r2" and state.loc["b", "last_run_id"] == "r1"
    assert str(state["capillary_id"].dtype) == "Int64"
    assert state.loc["c", "last_synced_at"] == pd.Timestamp("2026-01-01T00:00:00Z")
    assert len(warehouse.read_sync_state(conn_id)) == 4
    some = warehouse.read_sync_state(conn_id, "customer", keys=["c", "a", "zz", "C1"])
    assert sorted(some["entity_key"]) == ["a", "c"]  # only the customers asked for, by key
    assert some.set_index("entity_key").loc["a", "capillary_id"] == 11


OLD_STATE_COLUMNS = ("entity", "entity_key", "payload_hash", "capillary_id", "last_status", "last_run_id",
                     "last_synced_at")


def test_an_old_state_table_gets_the_association_columns_and_keeps_its_rows(conn_id):
    # A state table made by a version before associations were kept, with one row in it.
    with dialect.connect(conn_id) as (conn, name):
        cur = conn.cursor()
        cur.execute(dialect.create_table_sql(tables.STATE_TABLE, OLD_STATE_COLUMNS, outputs.OUTPUT_KINDS, name,
                                             ("entity", "entity_key")))
        mark = dialect.placeholder(conn)
        synced = "2025-01-01 00:00:00" if name == "mysql" else "2025-01-01T00:00:00+00:00"  # DATETIME: UTC
        cur.execute(f"INSERT INTO {tables.STATE_TABLE} VALUES ({', '.join([mark] * 7)})",
                    ("customer", "old", "h0", 7, "success", "r0", synced))
        cur.close()
    # Read first (as detect_changes may, before any write): the columns are added on the way.
    assert warehouse.read_sync_state(conn_id, "customer", keys=["old"])["capillary_id"].tolist() == [7]
    warehouse.ensure_output_tables(conn_id)  # again: nothing left to add, no error
    state = warehouse.read_sync_state(conn_id, "customer")
    assert list(state.columns) == list(tables.OUTPUT_TABLES[tables.STATE_TABLE])
    state = state.set_index("entity_key")
    assert state.loc["old", "capillary_id"] == 7 and state.loc["old", "payload_hash"] == "h0"
    assert state.loc["old", list(tables.STATE_ASSOCIATION)].isna().all()  # unknown: no association check

    # A successful send stores the association; a failed one (null) keeps it.
    sent = pd.DataFrame([{**_state("old", "h1", "success", 7, "r1"), "hierarchy_code": "H", "role_code": "FC",
                          "company_external_id": "ACME"}])
    warehouse.upsert_sync_state(conn_id, sent)
    held = pd.DataFrame([{**_state("old", None, "failed", None, "r2"), "hierarchy_code": None,
                          "role_code": None, "company_external_id": None}])
    held["capillary_id"] = held["capillary_id"].astype("Int64")
    warehouse.upsert_sync_state(conn_id, held)
    state = warehouse.read_sync_state(conn_id, "customer", keys=["old"]).set_index("entity_key")
    assert state.loc["old", ["hierarchy_code", "role_code", "company_external_id"]].tolist() == ["H", "FC", "ACME"]
    assert state.loc["old", "last_status"] == "failed" and state.loc["old", "capillary_id"] == 7


def test_sync_state_read_by_keys_covers_more_keys_than_one_query_takes(conn_id):
    warehouse.ensure_output_tables(conn_id)
    states = pd.DataFrame([_state(f"k{i:05d}", "h", "success", i, "r1") for i in range(1200)])
    states["capillary_id"] = states["capillary_id"].astype("Int64")
    warehouse.upsert_sync_state(conn_id, states)
    wanted = [f"k{i:05d}" for i in range(0, 1200, 2)] + ["missing"] * 3
    state = warehouse.read_sync_state(conn_id, "customer", keys=wanted)
    assert sorted(state["entity_key"]) == sorted(set(wanted) - {"missing"})
    assert set(state["capillary_id"]) == set(range(0, 1200, 2))


def test_table_names_come_only_from_the_contract(sqlite_conn):
    with pytest.raises(ValueError, match="not a per-run output table"):
        warehouse.replace_run_rows(sqlite_conn, "customers; DROP TABLE x", "r", pd.DataFrame())


def test_sqlite_epoch_numbers_and_space_separated_text_compare_right(sqlite_conn):
    companies, customers = sample_warehouse()
    customers["updated_at"] = customers["updated_at"].astype(object)
    customers.loc[customers.customer_key == "b", "updated_at"] = "2025-01-01 00:00:00"  # out now
    customers.loc[customers.customer_key == "f", "updated_at"] = int(START.timestamp()) + 60  # epoch, in
    load_frames(sqlite_conn, companies, customers)
    got = warehouse.extract(sqlite_conn, "customers", mode="incremental", interval_start=START, interval_end=END)
    assert keys(got) == {"f", "e"}


def test_postgres_naive_timestamps_are_read_as_utc(pg_conn):
    import psycopg2

    companies, customers = sample_warehouse()
    load_frames(pg_conn, companies, customers)
    url = __import__("os").environ["AIRFLOW_CONN_WAREHOUSE_TEST"]
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("ALTER DATABASE " + url.rsplit("/", 1)[1] + " SET timezone TO 'Asia/Kolkata'")
        cur.execute("ALTER TABLE customers ALTER COLUMN updated_at TYPE timestamp USING updated_at AT TIME ZONE 'UTC'")
    got = warehouse.extract(pg_conn, "customers", mode="incremental", interval_start=START, interval_end=END)
    assert keys(got) == {"a", "b", "c", "g", "e"}


# Not MariaDB: it has its own dialect, and ANSI double quotes are strings there.
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_generic_dialect_write_path_works_on_plain_dbapi(request, backend, monkeypatch):
    # The path Snowflake/Redshift/... take: portable DDL, executemany, delete+insert upsert.
    conn_id = request.getfixturevalue(CONN_FIXTURES[backend])
    monkeypatch.setattr(dialect, "dialect_of", lambda hook: "generic")
    warehouse.ensure_output_tables(conn_id)
    warehouse.replace_run_rows(conn_id, tables.RESULTS_TABLE, "run-1", _results("run-1", ["a", "b"]))
    warehouse.replace_run_rows(conn_id, tables.RESULTS_TABLE, "run-1", _results("run-1", ["a"]))
    assert outputs.read_table(conn_id, tables.RESULTS_TABLE).entity_key.tolist() == ["a"]
    warehouse.upsert_sync_state(conn_id, pd.DataFrame([_state("a", "h1", "success", 1, "r1")]))
    warehouse.upsert_sync_state(conn_id, pd.DataFrame([_state("a", "h2", "warning", 1, "r2"),
                                                       _state("b", "h3", "success", 2, "r2")]))
    failed = pd.DataFrame([{**_state("b", None, "failed", None, "r3"), "role_code": None}])
    failed["capillary_id"] = failed["capillary_id"].astype("Int64")
    warehouse.upsert_sync_state(conn_id, failed)  # a failed send keeps the known id, as on the other paths
    state = warehouse.read_sync_state(conn_id, "customer").set_index("entity_key")
    assert state.loc["b", "capillary_id"] == 2 and state.loc["b", "last_status"] == "failed"
    state.loc["b", "payload_hash"] = "h3"
    assert state.payload_hash.to_dict() == {"a": "h2", "b": "h3"}
    assert state.loc["a", "last_synced_at"] == pd.Timestamp("2026-01-01T00:00:00Z")


def test_postgres_jsonb_and_numeric_columns_come_back_as_json_text_and_ints(pg_conn):
    import psycopg2

    companies, customers = sample_warehouse()
    customers.loc[customers.customer_key == "a", "extended_fields"] = '{"fleet": "उत्तर", "size": 3}'
    load_frames(pg_conn, companies, customers)
    url = __import__("os").environ["AIRFLOW_CONN_WAREHOUSE_TEST"]
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE customers ALTER COLUMN extended_fields TYPE jsonb USING extended_fields::jsonb")
        cur.execute("ALTER TABLE customers ALTER COLUMN program_id TYPE numeric(12, 0)")
    got = warehouse.extract(pg_conn, "customers", mode="full").set_index("customer_key")
    assert json.loads(got.loc["a", "extended_fields"]) == {"fleet": "उत्तर", "size": 3}
    assert got.loc["e", "program_id"] == 7 and str(got["program_id"].dtype) == "Int64"


def test_collector_comes_back_only_after_the_last_of_overlapping_extracts():
    # tasks.extract reads companies and customers in two threads, each pausing the collector.
    import gc
    import threading

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with extraction._cycle_collector_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with extraction._cycle_collector_paused():
            second_in.set()
            first_out.wait(5)
            seen["after_first_left"] = gc.isenabled()

    assert gc.isenabled()
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"after_first_left": False}
    assert gc.isenabled()


def test_mariadb_keys_are_case_sensitive_like_everywhere_else(mariadb_conn):
    # MariaDB's default collations ignore case: "a" and "A" would be one customer.
    companies, customers = sample_warehouse()
    upper = customers[customers.customer_key == "a"].assign(customer_key="A", email="A@example.com")
    load_frames(mariadb_conn, companies, pd.concat([customers, upper]))
    got = warehouse.extract(mariadb_conn, "customers", mode="full")
    assert {"a", "A"} <= keys(got) and len(got) == len(customers) + 1
    warehouse.ensure_output_tables(mariadb_conn)
    warehouse.upsert_sync_state(mariadb_conn, pd.DataFrame([_state("a", "h1", "success", 1, "r1"),
                                                             _state("A", "h2", "success", 2, "r1")]))
    state = warehouse.read_sync_state(mariadb_conn, "customer", keys=["a"])
    assert state.entity_key.tolist() == ["a"] and state.capillary_id.tolist() == [1]


def test_mariadb_timestamp_json_and_decimal_columns_are_read_like_the_contract_says(mariadb_conn):
    companies, customers = sample_warehouse()
    customers.loc[customers.customer_key == "a", "extended_fields"] = '{"fleet": "उत्तर", "size": 3}'
    load_frames(mariadb_conn, companies, customers)
    with dialect.connect(mariadb_conn) as (conn, _):
        cur = conn.cursor()
        # TIMESTAMP is stored as UTC and shown in the session's zone; JSON is LONGTEXT checked as JSON.
        cur.execute("ALTER TABLE customers MODIFY updated_at TIMESTAMP(6) NULL, MODIFY extended_fields JSON, "
                    "MODIFY program_id DECIMAL(12, 0)")
        cur.close()
    got = warehouse.extract(mariadb_conn, "customers", mode="incremental", interval_start=START, interval_end=END)
    assert keys(got) == {"a", "b", "c", "g", "e"}
    by_key = got.set_index("customer_key")
    assert json.loads(by_key.loc["a", "extended_fields"]) == {"fleet": "उत्तर", "size": 3}
    assert by_key.loc["e", "program_id"] == 7 and str(got["program_id"].dtype) == "Int64"
    assert utc(by_key.loc["b", "updated_at"]) == START


def test_mariadb_through_mysql_connector_python(mariadb_url, monkeypatch):
    # The mysql provider's other client, chosen with the connection extra "client".
    url = urllib.parse.urlsplit(mariadb_url)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_CONNECTOR", json.dumps({
        "conn_type": "mysql", "host": url.hostname, "port": url.port, "login": url.username,
        "schema": url.path.lstrip("/"), "extra": {"client": "mysql-connector-python"},
    }))
    conn_id = "warehouse_connector"
    companies, customers = sample_warehouse()
    load_frames(conn_id, companies, customers, timestamps_as_text=True)
    got = warehouse.extract(conn_id, "customers", mode="incremental", interval_start=START, interval_end=END)
    assert keys(got) == {"a", "b", "c", "g", "e"}
    assert set(got.set_index("customer_key").loc["a", ["first_name", "last_name"]]) == {"राजेश", "कुमार"}
    warehouse.ensure_output_tables(conn_id)
    warehouse.record_batch(conn_id, "run-1", results=_results("run-1", ["a", "b"]),
                           warnings=pd.DataFrame(columns=list(tables.OUTPUT_TABLES[tables.WARNINGS_TABLE])[1:]),
                           state=pd.DataFrame([_state("a", "h1", "success", 1, "run-1"),
                                               _state("b", "h1", "success", 2, "run-1")]))
    state = warehouse.read_sync_state(conn_id, "customer").set_index("entity_key")
    assert state.capillary_id.to_dict() == {"a": 1, "b": 2}
    assert state.loc["a", "last_synced_at"] == pd.Timestamp("2026-01-01T00:00:00Z")


def test_mariadb_write_back_of_thousands_of_rows_keeps_every_row_and_known_id(mariadb_conn):
    # A full first sync of a mid-size warehouse: record_batch per 100-customer batch, then
    # a re-run whose sends all fail keeps every stored id (COALESCE in ON DUPLICATE KEY UPDATE).
    count = 6000
    keys_ = [f"k{i:05d}" for i in range(count)]
    warehouse.ensure_output_tables(mariadb_conn)
    no_warnings = pd.DataFrame(columns=list(tables.OUTPUT_TABLES[tables.WARNINGS_TABLE])[1:])
    for start in range(0, count, 1000):
        part = keys_[start:start + 1000]
        state = pd.DataFrame([_state(k, "h1", "success", i + start, "r1") for i, k in enumerate(part)])
        warehouse.record_batch(mariadb_conn, "r1", results=_results("r1", part), warnings=no_warnings, state=state)
    failed = pd.DataFrame([_state(k, None, "failed", None, "r2") for k in keys_])
    failed["capillary_id"] = failed["capillary_id"].astype("Int64")
    warehouse.upsert_sync_state(mariadb_conn, failed)
    warehouse.replace_run_rows(mariadb_conn, tables.RESULTS_TABLE, "r2", _results("r2", keys_, status="failed"))

    state = warehouse.read_sync_state(mariadb_conn, "customer")
    assert len(state) == count and set(state.last_status) == {"failed"}
    assert state.set_index("entity_key").capillary_id.to_dict() == {k: i for i, k in enumerate(keys_)}
    results = outputs.read_table(mariadb_conn, tables.RESULTS_TABLE)
    assert results.groupby("run_id").size().to_dict() == {"r1": count, "r2": count}


def test_mariadb_parallel_writers_record_their_batches_without_deadlock(mariadb_conn):
    # Mapped `post` tasks record batches side by side. Under InnoDB's default REPEATABLE
    # READ their deletes and upserts locked each other's key gaps and died with 1213.
    import threading

    warehouse.ensure_output_tables(mariadb_conn)
    no_warnings = pd.DataFrame(columns=list(tables.OUTPUT_TABLES[tables.WARNINGS_TABLE])[1:])
    errors, written = [], []

    def writer(w):
        try:
            for b in range(15):
                # Keys of the writers interleave in key order, as customers of different chunks do.
                part = [f"{i:03d}-{b:03d}-w{w}" if (b + i) % 2 else f"w{w}-{b:03d}-{i:03d}" for i in range(50)]
                state = pd.DataFrame([_state(k, "h", "success", i, "r1") for i, k in enumerate(part)])
                warehouse.record_batch(mariadb_conn, "r1", results=_results("r1", part), warnings=no_warnings,
                                       state=state)
                written.extend(part)
        except Exception as exc:  # a deadlock fails the task that hits it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(warehouse.read_sync_state(mariadb_conn, "customer")) == len(written) == 4 * 15 * 50
    assert len(outputs.read_table(mariadb_conn, tables.RESULTS_TABLE)) == len(written)
