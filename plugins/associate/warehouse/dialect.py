"""How the pipeline speaks to a warehouse: connections, dialect, placeholders, identifiers, DDL.

The connection's own DbApiHook gives the DB-API connection; everything else in the package
speaks plain DB-API on it. Table names come only from ``associate.tables``; values are
always bound, never rendered into SQL.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from associate import tables

SQLITE_BUSY_TIMEOUT_MS = 60_000

INPUT_TABLES = {"fleet_companies": tables.COMPANY_COLUMNS, "customers": tables.CUSTOMER_COLUMNS}
_IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
# Column names that are reserved words somewhere and must be quoted.
_RESERVED = {"check"}

# Portable column types per dialect: text, big integer, integer, timestamp, date.
_TYPES = {
    "sqlite": {"text": "TEXT", "bigint": "INTEGER", "int": "INTEGER", "ts": "TEXT", "date": "TEXT"},
    "postgres": {"text": "TEXT", "bigint": "BIGINT", "int": "INTEGER", "ts": "TIMESTAMPTZ", "date": "DATE"},
    "generic": {"text": "VARCHAR(65535)", "bigint": "BIGINT", "int": "INTEGER", "ts": "TIMESTAMP", "date": "DATE"},
}


def db_hook(conn_id: str):
    """Return the DbApiHook of an Airflow connection (SqliteHook, PostgresHook, SnowflakeHook, ...)."""
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).get_hook()


def dialect_of(hook) -> str:
    """Return ``sqlite``, ``postgres`` or ``generic``: which SQL folder and fast path apply."""
    conn_type = (getattr(hook, "conn_type", None) or "").lower()
    if conn_type == "sqlite":
        return "sqlite"
    if conn_type in ("postgres", "postgresql"):
        return "postgres"
    return "generic"


def _paramstyle(conn) -> str:
    module = sys.modules.get(type(conn).__module__.split(".")[0])
    return getattr(module, "paramstyle", "qmark")


def placeholder(conn) -> str:
    """Return the bound-parameter mark of the connection's driver: ``?`` or ``%s``."""
    return "?" if _paramstyle(conn) == "qmark" else "%s"


@contextlib.contextmanager
def connect(conn_id: str) -> Iterator[tuple[Any, str]]:
    """One DB-API connection in one transaction: commit on success, rollback on error."""
    hook = db_hook(conn_id)
    dialect = dialect_of(hook)
    conn = hook.get_conn()
    try:
        if dialect == "sqlite":
            # Concurrent writers (mapped tasks) wait for the lock instead of failing.
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        yield conn, dialect
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def ident(name: str) -> str:
    """Return a column name as SQL, quoted where it is a reserved word; anything else is refused."""
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return f'"{name}"' if name in _RESERVED else name


def table_name(table: str) -> str:
    """Return a table name as SQL; only the tables of ``associate.tables`` are accepted."""
    if table not in tables.OUTPUT_TABLES and table not in INPUT_TABLES:
        raise ValueError(f"unknown table {table!r}: only tables of associate.tables are written")
    return ident(table)


def column_type(column: str, kinds: dict[str, str], dialect: str) -> str:
    """Return the SQL type of a column in a dialect; ``kinds`` maps columns to type kinds (default text)."""
    return _TYPES[dialect][kinds.get(column, "text")]


def create_table_sql(table: str, columns: Sequence[str], kinds: dict[str, str], dialect: str,
                     primary_key: Sequence[str] = ()) -> str:
    """Return ``CREATE TABLE IF NOT EXISTS`` of a table; ``kinds`` maps columns to type kinds (default text)."""
    types = _TYPES[dialect]
    parts = []
    for column in columns:
        null = " NOT NULL" if column in primary_key else ""
        parts.append(f"{ident(column)} {types[kinds.get(column, 'text')]}{null}")
    if primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(ident(c) for c in primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {table_name(table)} ({', '.join(parts)})"
