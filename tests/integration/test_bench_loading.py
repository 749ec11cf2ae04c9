"""The sample warehouse loaded into SQLite and PostgreSQL: every value round-trips; touching changes what it says."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pandas as pd

from bench.generate import generate_warehouse, load_postgres, load_sqlite, touch

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _read_back(connection, table: str) -> pd.DataFrame:
    """A loaded table as a frame, with timestamps parsed to UTC for comparison."""
    cursor = connection.cursor()
    cursor.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description]
    return pd.DataFrame(cursor.fetchall(), columns=names, dtype=object)


def _assert_round_trip(original: pd.DataFrame, loaded: pd.DataFrame, key: str) -> None:
    """Every value of every column survives the load (timestamps compared as instants)."""
    assert list(loaded.columns) == list(original.columns)
    loaded = loaded.set_index(key, drop=False).loc[original[key]].reset_index(drop=True)
    for column in original.columns:
        before, after = original[column], loaded[column]
        if str(before.dtype).startswith("datetime64"):
            after = pd.to_datetime(after, utc=True, format="ISO8601")
            assert ((before == after) | (before.isna() & after.isna())).all(), column
        elif column == "last_viewed_date":
            after = after.map(lambda v: v if v is None or not isinstance(v, str) else datetime.fromisoformat(v).date())
            assert ((before == after) | (before.isna() & after.isna())).all(), column
        else:
            same = before.astype(object).where(before.notna(), None).tolist() == after.where(after.notna(), None).tolist()
            assert same, column


def test_load_sqlite_round_trips_every_value(tmp_path):
    companies, customers = generate_warehouse(600, seed=9, now=NOW)
    path = tmp_path / "warehouse.db"
    load_sqlite(path, companies, customers)
    load_sqlite(path, companies, customers)  # re-loading replaces, never duplicates
    with sqlite3.connect(path) as connection:
        _assert_round_trip(companies, _read_back(connection, "fleet_companies"), "company_external_id")
        _assert_round_trip(customers, _read_back(connection, "customers"), "customer_key")
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(customers)")}
        assert {"ix_customers_updated_at", "ix_customers_parent_customer_key",
                "ix_customers_company_external_id"} <= indexes


def test_load_postgres_round_trips_every_value(pg_url):
    import psycopg2

    companies, customers = generate_warehouse(600, seed=9, now=NOW)
    load_postgres(pg_url, companies, customers)
    load_postgres(pg_url, companies, customers)
    with psycopg2.connect(pg_url) as connection:
        _assert_round_trip(companies, _read_back(connection, "fleet_companies"), "company_external_id")
        _assert_round_trip(customers, _read_back(connection, "customers"), "customer_key")
        cursor = connection.cursor()
        cursor.execute("SELECT data_type FROM information_schema.columns "
                       "WHERE table_name = 'customers' AND column_name = 'registered_at'")
        assert cursor.fetchone()[0] == "timestamp with time zone"
    connection.close()


def _names_and_stamps(connection) -> pd.DataFrame:
    cursor = connection.cursor()
    cursor.execute("SELECT customer_key, first_name, updated_at FROM customers ORDER BY customer_key")
    return pd.DataFrame(cursor.fetchall(), columns=["customer_key", "first_name", "updated_at"]).set_index("customer_key")


def _assert_touched(before: pd.DataFrame, after: pd.DataFrame, keys: list[str], when: datetime) -> None:
    changed = before.index[(before["first_name"] != after["first_name"])]
    assert sorted(changed) == sorted(keys)
    stamps = pd.to_datetime(after["updated_at"], utc=True, format="ISO8601")
    assert (stamps.loc[keys] == pd.Timestamp(when)).all()
    untouched = before.index.difference(keys)
    assert (after.loc[untouched, "updated_at"] == before.loc[untouched, "updated_at"]).all()


def test_touch_changes_exactly_the_chosen_fraction_on_sqlite(tmp_path):
    companies, customers = generate_warehouse(1000, seed=3, now=NOW)
    path = tmp_path / "w.db"
    load_sqlite(path, companies, customers)
    when = datetime(2026, 6, 2, 12, 0, tzinfo=timezone.utc)
    with sqlite3.connect(path) as connection:
        before = _names_and_stamps(connection)
    keys = touch(str(path), 0.05, seed=4, now=when)
    assert len(keys) == 50
    with sqlite3.connect(path) as connection:
        _assert_touched(before, _names_and_stamps(connection), keys, when)
    load_sqlite(path, companies, customers)
    assert touch(str(path), 0.05, seed=4, now=when) == keys  # same seed, same customers
    assert touch(str(path), 0.0, seed=4, now=when) == []


def test_touch_changes_exactly_the_chosen_fraction_on_postgres(pg_url):
    import psycopg2

    companies, customers = generate_warehouse(1000, seed=3, now=NOW)
    load_postgres(pg_url, companies, customers)
    when = datetime(2026, 6, 2, 12, 0, tzinfo=timezone.utc)
    connection = psycopg2.connect(pg_url)
    try:
        before = _names_and_stamps(connection)
        keys = touch(connection, 0.01, seed=4, now=when)
        assert len(keys) == 10
        _assert_touched(before, _names_and_stamps(connection), keys, when)
    finally:
        connection.close()
