"""How the pipeline speaks to a warehouse: connections, dialect, placeholders, identifiers, DDL.

The connection's own DbApiHook gives the DB-API connection; everything else in the package
speaks plain DB-API on it. Table names come only from ``associate.tables``; values are
always bound, never rendered into SQL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
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
# MySQL/MariaDB quote identifiers with backticks (double quotes are strings there).
_QUOTES = {"mysql": "`"}

# Column types per dialect: text, key (text in a primary key or index), big integer,
# integer, timestamp, date. MySQL/MariaDB index no TEXT without a prefix length, and
# their default collations ignore case: keys are VARCHAR with a binary collation, so
# that 'a' and 'A' stay two customers. They have no zoned timestamp: DATETIME holds UTC.
_TYPES = {
    "sqlite": {"text": "TEXT", "key": "TEXT", "bigint": "INTEGER", "int": "INTEGER", "ts": "TEXT", "date": "TEXT"},
    "postgres": {"text": "TEXT", "key": "TEXT", "bigint": "BIGINT", "int": "INTEGER", "ts": "TIMESTAMPTZ",
                 "date": "DATE"},
    "mysql": {"text": "TEXT", "key": "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", "bigint": "BIGINT",
              "int": "INTEGER", "ts": "DATETIME(6)", "date": "DATE"},
    "generic": {"text": "VARCHAR(65535)", "key": "VARCHAR(65535)", "bigint": "BIGINT", "int": "INTEGER",
                "ts": "TIMESTAMP", "date": "DATE"},
}


def db_hook(conn_id: str):
    """Return the DbApiHook of an Airflow connection (SqliteHook, PostgresHook, MySqlHook, SnowflakeHook, ...)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if (conn.conn_type or "").lower() in ("mysql", "mariadb") and "client" not in conn.extra_dejson \
            and importlib.util.find_spec("MySQLdb") is None:
        # The provider's default client, mysqlclient, only builds against MariaDB's C headers;
        # where it is absent the provider's pure-Python client serves (docs/warehouse.md).
        extra = {**conn.extra_dejson, "client": "mysql-connector-python"}
        pure = type(conn)(**{**_connection_fields(conn), "extra": json.dumps(extra)})
        return conn.get_hook(hook_params={"connection": pure})
    return conn.get_hook()


def _connection_fields(conn) -> dict[str, Any]:
    return {name: getattr(conn, name) for name in ("conn_id", "conn_type", "host", "login", "password",
                                                   "schema", "port")}


def dialect_of(hook) -> str:
    """Return ``sqlite``, ``postgres``, ``mysql`` (also MariaDB) or ``generic``: the SQL folder and fast path."""
    conn_type = (getattr(hook, "conn_type", None) or "").lower()
    if conn_type == "sqlite":
        return "sqlite"
    if conn_type in ("postgres", "postgresql"):
        return "postgres"
    if conn_type in ("mysql", "mariadb"):
        return "mysql"
    return "generic"


def _paramstyle(conn) -> str:
    # The innermost package that declares it: `mysql.connector`, not `mysql`; `MySQLdb`, `psycopg2`.
    parts = type(conn).__module__.split(".")
    for end in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:end]))
        if hasattr(module, "paramstyle"):
            return module.paramstyle
    return "qmark"


def placeholder(conn) -> str:
    """Return the bound-parameter mark of the connection's driver: ``?`` or ``%s``."""
    return "?" if _paramstyle(conn) == "qmark" else "%s"


@contextlib.contextmanager
def session(conn_id: str) -> Iterator[tuple[Any, str]]:
    """One DB-API connection, set up for the pipeline, for one or more ``transaction``s; closed at the end."""
    hook = db_hook(conn_id)
    dialect = dialect_of(hook)
    conn = hook.get_conn()
    try:
        if dialect == "sqlite":
            # Concurrent writers (mapped tasks) wait for the lock instead of failing.
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        elif dialect == "mysql":
            utc_session(conn)
            # InnoDB's default REPEATABLE READ locks the gaps around the keys a batch deletes
            # and upserts: parallel writers (mapped tasks) then deadlock on each other's gaps.
            cur = conn.cursor()
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.close()
        yield conn, dialect
    finally:
        with contextlib.suppress(Exception):
            conn.close()


@contextlib.contextmanager
def transaction(conn) -> Iterator[None]:
    """Commit what the block wrote on the connection, or roll it back when the block raises."""
    try:
        yield
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise


@contextlib.contextmanager
def connect(conn_id: str) -> Iterator[tuple[Any, str]]:
    """One DB-API connection in one transaction: commit on success, rollback on error."""
    with session(conn_id) as (conn, dialect), transaction(conn):
        yield conn, dialect


def utc_session(conn) -> None:
    """MySQL/MariaDB: the session's time zone is UTC, so TIMESTAMP columns and NOW() read as UTC."""
    cur = conn.cursor()
    cur.execute("SET time_zone = '+00:00'")
    cur.close()


def ident(name: str, dialect: str | None = None) -> str:
    """Return a column name as SQL, quoted the dialect's way if it is a reserved word; anything else is refused."""
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    quote = _QUOTES.get(dialect or "", '"')
    return f"{quote}{name}{quote}" if name in _RESERVED else name


def table_name(table: str, dialect: str | None = None) -> str:
    """Return a table name as SQL; only the tables of ``associate.tables`` are accepted."""
    if table not in tables.OUTPUT_TABLES and table not in INPUT_TABLES:
        raise ValueError(f"unknown table {table!r}: only tables of associate.tables are written")
    return ident(table, dialect)


def create_index(cur, dialect: str, name: str, table: str, columns: Sequence[str]) -> None:
    """Create an index unless it exists (MySQL has no ``CREATE INDEX IF NOT EXISTS``: ask the catalogue)."""
    column_sql = ", ".join(ident(c, dialect) for c in columns)
    if dialect != "mysql":
        cur.execute(f"CREATE INDEX IF NOT EXISTS {ident(name)} ON {table_name(table)} ({column_sql})")
        return
    cur.execute("SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() "
                "AND table_name = %s AND index_name = %s", (table, name))
    if cur.fetchall():
        return
    try:
        cur.execute(f"CREATE INDEX {ident(name, dialect)} ON {table_name(table, dialect)} ({column_sql})")
    except Exception as exc:  # a concurrent task created it first: "Duplicate key name"
        if "duplicate key name" not in str(exc).lower():
            raise


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
        kind = kinds.get(column, "key" if column in primary_key else "text")  # a key's text must be indexable
        parts.append(f"{ident(column, dialect)} {types[kind]}{null}")
    if primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(ident(c, dialect) for c in primary_key)})")
    # Text in MySQL/MariaDB is utf8mb4 whatever the server's default: names in any script.
    options = " DEFAULT CHARACTER SET utf8mb4" if dialect == "mysql" else ""
    return f"CREATE TABLE IF NOT EXISTS {table_name(table, dialect)} ({', '.join(parts)}){options}"
