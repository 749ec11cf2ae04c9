"""Input tables through an Airflow connection, for tests and the demo: create them, load frames.

Unlike ``bench.generate``'s ``load_sqlite`` / ``load_postgres`` (raw sqlite3 / psycopg2, for
speed at a million rows), these go through the warehouse connection and the pipeline's own
write path (``associate.warehouse.dialect`` / ``rows``), so any connection type the pipeline
reaches can be loaded, and timestamps can be stored as text to exercise that form.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from associate import tables  # noqa: E402  (after the path is set)
from associate.warehouse.dialect import INPUT_TABLES, connect, create_index, create_table_sql, table_name  # noqa: E402
from associate.warehouse.rows import frame_rows, insert_rows  # noqa: E402

# Column type kinds of the input tables (see dialect.create_table_sql); the rest is text.
INPUT_KINDS = {
    "customer_key": "key", "company_external_id": "key", "parent_customer_key": "key",
    "parent_company_external_id": "key", "program_id": "bigint", "tier_number": "int", "loyalty_points": "bigint",
    "tier_expiry_date": "ts", "points_expiry_date": "ts", "registered_at": "ts",
    "updated_at": "ts", "last_viewed_date": "date",
}


def ensure_input_tables(conn_id: str, *, timestamps_as_text: bool = False) -> None:
    """Create ``fleet_companies`` and ``customers`` with the contract's columns, with lookup indexes."""
    kinds = dict(INPUT_KINDS)
    if timestamps_as_text:
        # "key": text that MySQL/MariaDB can index (VARCHAR); TEXT on SQLite and PostgreSQL.
        kinds.update({c: "key" for c, k in INPUT_KINDS.items() if k in ("ts", "date")})
    with connect(conn_id) as (conn, dialect):
        cur = conn.cursor()
        cur.execute(create_table_sql("fleet_companies", tables.COMPANY_COLUMNS, kinds, dialect,
                                     ("company_external_id",)))
        cur.execute(create_table_sql("customers", tables.CUSTOMER_COLUMNS, kinds, dialect,
                                     ("customer_key",)))
        if dialect != "generic":
            # The incremental extract walks parent links both ways and joins by company.
            create_index(cur, dialect, "ix_customers_parent", "customers", ("parent_customer_key",))
            create_index(cur, dialect, "ix_customers_company", "customers", ("company_external_id",))
            create_index(cur, dialect, "ix_customers_updated", "customers", ("updated_at",))
            create_index(cur, dialect, "ix_fleet_companies_updated", "fleet_companies", ("updated_at",))
        cur.close()


def load_frames(conn_id: str, companies: pd.DataFrame | None = None,
                customers: pd.DataFrame | None = None, *, replace: bool = True,
                timestamps_as_text: bool = False) -> None:
    """Load frames into the input tables (created if missing); ``replace`` empties them first."""
    ensure_input_tables(conn_id, timestamps_as_text=timestamps_as_text)
    with connect(conn_id) as (conn, dialect):
        for table, frame in (("fleet_companies", companies), ("customers", customers)):
            if frame is None:
                continue
            columns = [c for c in INPUT_TABLES[table] if c in frame.columns]
            if replace:
                cur = conn.cursor()
                cur.execute(f"DELETE FROM {table_name(table, dialect)}")
                cur.close()
            naive_utc = dialect == "mysql" and not timestamps_as_text
            if naive_utc:
                frame = _as_instants(frame)  # DATETIME takes no offset: text times become UTC instants
            insert_rows(conn, dialect, table, columns, frame_rows(frame, columns, naive_utc=naive_utc))


def _as_instants(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its timestamp columns parsed (ISO-8601 text with any offset) as UTC."""
    frame = frame.copy()
    for column, kind in INPUT_KINDS.items():
        if kind == "ts" and column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame
