"""Warehouse I/O through any Airflow SQL connection: extract, output tables, sync state.

The connection's own DbApiHook gives the DB-API connection; everything here speaks plain
DB-API on it, with two fast paths: PostgreSQL ``COPY`` and SQLite ``executemany`` in one
transaction. Table names come only from ``associate.tables``; values are always bound.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from associate import config, tables
from associate.exceptions import ExtractError

log = logging.getLogger(__name__)

MODES = ("full", "incremental")
ENTITY_SQL = {"customers": "extract_customers.sql", "companies": "extract_companies.sql"}
COUNT_CHANGED_SQL = "count_changed.sql"
FETCH_ROWS = 50_000
# At 1M customers the incremental scope (recursive joins over ancestors and descendants)
# costs more than a full read once about a fifth of the rows changed (BENCHMARKS.md).
FULL_EXTRACT_SHARE = 0.2
ENTITY_COLUMNS = {"customers": tables.CUSTOMER_COLUMNS, "companies": tables.COMPANY_COLUMNS}
# Both the table-ish plural and the entity names of associate.tables are accepted.
_ENTITY_ALIASES = {tables.ENTITY_CUSTOMER: "customers", tables.ENTITY_COMPANY: "companies",
                   "customers": "customers", "companies": "companies"}
INT_COLUMNS = ("program_id", "tier_number", "loyalty_points")
TIMESTAMP_COLUMNS = ("tier_expiry_date", "points_expiry_date", "registered_at", "updated_at")
DATE_COLUMNS = ("last_viewed_date",)
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
_OUTPUT_KINDS = {
    "capillary_id": "bigint", "error_code": "bigint", "code": "bigint", "attempts": "int",
    "quarantined_at": "ts", "synced_at": "ts", "last_synced_at": "ts",
}
_INPUT_KINDS = {
    "program_id": "bigint", "tier_number": "int", "loyalty_points": "bigint",
    "tier_expiry_date": "ts", "points_expiry_date": "ts", "registered_at": "ts",
    "updated_at": "ts", "last_viewed_date": "date",
}


# --- connections ------------------------------------------------------------------------


def db_hook(conn_id: str):
    """The DbApiHook of an Airflow connection (SqliteHook, PostgresHook, SnowflakeHook, ...)."""
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).get_hook()


def dialect_of(hook) -> str:
    """``sqlite``, ``postgres`` or ``generic``: which SQL folder and fast path apply."""
    conn_type = (getattr(hook, "conn_type", None) or "").lower()
    if conn_type == "sqlite":
        return "sqlite"
    if conn_type in ("postgres", "postgresql"):
        return "postgres"
    return "generic"


def _paramstyle(conn) -> str:
    module = sys.modules.get(type(conn).__module__.split(".")[0])
    return getattr(module, "paramstyle", "qmark")


def _placeholder(conn) -> str:
    return "?" if _paramstyle(conn) == "qmark" else "%s"


@contextlib.contextmanager
def _connect(conn_id: str) -> Iterator[tuple[Any, str]]:
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


def _ident(name: str) -> str:
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return f'"{name}"' if name in _RESERVED else name


def _table_name(table: str) -> str:
    if table not in tables.OUTPUT_TABLES and table not in INPUT_TABLES:
        raise ValueError(f"unknown table {table!r}: only tables of associate.tables are written")
    return _ident(table)


# --- extract ----------------------------------------------------------------------------


def default_sql_dir() -> Path:
    """The extract SQL folder (setting ``sql_dir``)."""
    return config.sql_dir()


def _iso_utc(value: Any, name: str) -> str | None:
    """An interval edge as ISO-8601 UTC text; anything that is not a timestamp is refused."""
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} is not a timestamp: {value!r}") from exc
    if stamp is pd.NaT:
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def effective_mode(mode: str, interval_start: Any, interval_end: Any) -> str:
    """The mode an extract really runs: a manual run (empty interval) is a full run."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "incremental":
        start, end = _iso_utc(interval_start, "interval_start"), _iso_utc(interval_end, "interval_end")
        if start is None or end is None or start >= end:
            return "full"
    return mode


def _entity(entity: str) -> str:
    if entity not in _ENTITY_ALIASES:
        raise ValueError(f"entity must be one of {tuple(_ENTITY_ALIASES)}, got {entity!r}")
    return _ENTITY_ALIASES[entity]


def render_extract_sql(entity: str, dialect: str, *, mode: str, interval_start: Any = None,
                       interval_end: Any = None, sql_dir: str | Path | None = None) -> tuple[str, Path]:
    """Render the extract SQL of an entity for a dialect; answers (sql, path of the file)."""
    return _render_sql(ENTITY_SQL[_entity(entity)], dialect, mode=mode, interval_start=interval_start,
                       interval_end=interval_end, sql_dir=sql_dir)


def _render_sql(name: str, dialect: str, *, mode: str, interval_start: Any, interval_end: Any,
                sql_dir: str | Path | None) -> tuple[str, Path]:
    import jinja2

    base = Path(sql_dir) if sql_dir else default_sql_dir()
    folders = [base / dialect, base / "generic"]
    path = next((f / name for f in folders if (f / name).is_file()), None)
    if path is None:
        raise ExtractError(f"no {name} under {base} (looked in {', '.join(map(str, folders))})")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
    )
    run_mode = effective_mode(mode, interval_start, interval_end)
    sql = env.get_template(name).render(
        mode=run_mode,
        full=run_mode == "full",
        data_interval_start=_iso_utc(interval_start, "interval_start") or "",
        data_interval_end=_iso_utc(interval_end, "interval_end") or "",
    )
    return sql, path


def changed_share(conn_id: str, *, interval_start: Any, interval_end: Any,
                  sql_dir: str | Path | None = None) -> float | None:
    """Share of customers changed in the interval (``count_changed.sql``); None if there is no such file."""
    hook = db_hook(conn_id)
    dialect = dialect_of(hook)
    try:
        sql, path = _render_sql(COUNT_CHANGED_SQL, dialect, mode="incremental", interval_start=interval_start,
                                interval_end=interval_end, sql_dir=sql_dir)
    except ExtractError:
        return None  # a custom SQL folder without the count: always extract incrementally
    _, (changed, total) = _read_query(hook, dialect, conn_id, sql, path, lambda cur: cur.fetchone())
    return float(changed or 0) / float(total) if total else None


def extract(conn_id: str, entity: str, *, mode: str, interval_start: Any = None,
            interval_end: Any = None, sql_dir: str | Path | None = None, arrow_text: bool = False) -> pd.DataFrame:
    """Run the extract SQL of ``customer``/``customers`` or ``company``/``companies``; answer the canonical frame.

    Text columns hold ``str`` or None; with ``arrow_text`` a column of nothing but text is
    pandas' Arrow-backed ``str`` instead (missing = NaN): what a staged file reads back as,
    at a fraction of the memory and of the cost of staging it.
    """
    entity = _entity(entity)
    hook = db_hook(conn_id)
    dialect = dialect_of(hook)
    sql, path = render_extract_sql(entity, dialect, mode=mode, interval_start=interval_start,
                                   interval_end=interval_end, sql_dir=sql_dir)
    log.info("Extracting %s with %s (mode %s)", entity, path,
             effective_mode(mode, interval_start, interval_end))
    with _cycle_collector_paused():
        names, columns = _read_query(hook, dialect, conn_id, sql, path, _fetch_columns, stream=True)
        return _canonical_columns(entity, names, columns, source=str(path), arrow_text=arrow_text)


_collector_lock = threading.Lock()
_collector_pauses = 0
_collector_was_enabled = False


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector (reference counting still frees everything).

    Every fetched row is a fresh tuple; the collector would rescan the growing pile of them
    again and again, and that took half of a million-row extract. Rows form no cycles.
    Extracts may run side by side in threads: the collector comes back after the last one.
    """
    global _collector_pauses, _collector_was_enabled
    with _collector_lock:
        if _collector_pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _collector_pauses += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector_pauses -= 1
            if _collector_pauses == 0 and _collector_was_enabled:
                gc.enable()


def _read_query(hook, dialect: str, conn_id: str, sql: str, path: Path, read, *, stream: bool = False):
    """Run one query of the extract SQL; answers (column names, ``read(cursor)``), errors name the file."""
    conn = hook.get_conn()
    try:
        if dialect == "postgres":
            # Naive `timestamp` columns then read as UTC, as everywhere else in the pipeline.
            setup = conn.cursor()
            setup.execute("SET TIME ZONE 'UTC'")
            setup.close()
        # On PostgreSQL a server-side cursor: the client never buffers the whole result at once.
        cur = conn.cursor(name="associate_extract") if stream and dialect == "postgres" else conn.cursor()
        try:
            cur.execute(sql)
            result = read(cur)
        except Exception as exc:
            raise ExtractError(f"{path} failed on connection {conn_id!r}: {exc}") from exc
        names = [d[0].lower() for d in cur.description]
        cur.close()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()
    return names, result


def _fetch_columns(cur) -> list[list[Any]]:
    """The result as one list per column, fetched in blocks (never all rows as tuples at once)."""
    columns: list[list[Any]] | None = None
    while True:
        block = cur.fetchmany(FETCH_ROWS)
        if not block:
            break
        if columns is None:
            columns = [[] for _ in block[0]]
        for values, column in zip(zip(*block), columns):
            column.extend(values)
    return columns if columns is not None else [[] for _ in cur.description]


def canonical_frame(entity: str, names: Sequence[str], rows: Sequence[Sequence[Any]], *,
                    source: str = "the query") -> pd.DataFrame:
    """Rows of an extract as the canonical frame: contract columns in order, extras dropped."""
    columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in names]
    return _canonical_columns(entity, names, columns, source=source)


def _canonical_columns(entity: str, names: Sequence[str], columns: list[list[Any]], *,
                       source: str, arrow_text: bool = False) -> pd.DataFrame:
    entity = _entity(entity)
    required = ENTITY_COLUMNS[entity]
    missing = [c for c in required if c not in names]
    if missing:
        raise ExtractError(
            f"{source} did not return the required column(s) {', '.join(missing)} "
            f"for {entity}; it returned: {', '.join(names) or 'nothing'}"
        )
    position = {name: i for i, name in enumerate(names)}
    data = {}
    for column in required:
        values = columns[position[column]]
        columns[position[column]] = []  # each raw column is freed once converted
        if column in INT_COLUMNS:
            data[column] = _int_column(values)
        elif arrow_text and (text := _arrow_text(values)) is not None:
            data[column] = text
        elif column in TIMESTAMP_COLUMNS or column in DATE_COLUMNS:
            data[column] = pd.Series(values, dtype=object)
        else:
            data[column] = pd.Series(
                [v if v is None or type(v) is str else _text(v) for v in values], dtype=object
            )
    if entity == "customers" and tables.CUSTOMER_CHILD_COUNT in position:
        data[tables.CUSTOMER_CHILD_COUNT] = _int_column(columns[position[tables.CUSTOMER_CHILD_COUNT]])
    return pd.DataFrame(data, columns=list(data))


def _arrow_text(values: list[Any]) -> pd.Series | None:
    """Values that are all ``str`` (or None) as an Arrow-backed ``str`` column; None if any is not."""
    import pyarrow as pa

    try:
        array = pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # numbers, dates, JSON... converted one by one as the column's kind says
    if array.null_count == len(array):
        return None  # no text at all: staged as before, with no type
    return array.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get)


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)  # a json/jsonb column
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a numeric key column read as float
    return str(value)


def _int_column(values: Sequence[Any]) -> pd.Series:
    # Int64 if every value is an integer (or text/float holding one); else the raw values
    # so that validation can name the bad ones.
    parsed = []
    for v in values:
        if v is None:
            parsed.append(None)
        elif isinstance(v, bool):
            return pd.Series(values, dtype=object)
        elif isinstance(v, int):
            parsed.append(v)
        else:
            try:
                number = float(str(v).strip())
            except ValueError:
                return pd.Series(values, dtype=object)
            if number != number or not number.is_integer():
                return pd.Series(values, dtype=object)
            parsed.append(int(number))
    try:
        return pd.Series(pd.array(parsed, dtype="Int64"))
    except OverflowError:  # beyond int64 (e.g. 1e20 in a REAL or NUMERIC column): validation names it
        return pd.Series(values, dtype=object)


# --- value conversion -------------------------------------------------------------------


def _iso_series(series: pd.Series) -> pd.Series:
    """``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (UTC; naive values are UTC), None where missing."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    # numpy formats in C; strftime with %f costs seconds per million values.
    text = np.datetime_as_string(series.to_numpy(dtype="datetime64[us]"), unit="us")
    return pd.Series(np.char.add(text, "+00:00"), index=series.index, dtype=object).where(series.notna(), None)


def _db_value(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.isoformat() if value.tzinfo else value.isoformat() + "+00:00"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalars
    if value is pd.NA:
        return None
    return value


def db_columns(df: pd.DataFrame, columns: Sequence[str]) -> list[list[Any]]:
    """Columns of a frame as lists of DB-API values: None for missing, ISO text for times."""
    out = []
    for column in columns:
        series = df[column]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            out.append(_iso_series(series).tolist())
        elif pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
            obj = series.astype(object)
            out.append([None if v is pd.NA or v is None else int(v) for v in obj])
        elif pd.api.types.is_float_dtype(series.dtype):
            # Float ids (an int column with NaN) go back to int when they are whole.
            out.append([None if v != v else (int(v) if float(v).is_integer() else v) for v in series.tolist()])
        elif series.dtype == "str" or pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
            # Text only (checked in C): no value needs converting, only missing ones.
            out.append(series.astype(object).where(series.notna(), None).tolist())
        else:
            out.append([_db_value(v) for v in series.astype(object).tolist()])
    return out


def _rows(df: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    return list(zip(*db_columns(df, columns))) if len(df) else []


def _csv(rows: list[tuple]) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # '\N' marks NULL, so empty text stays empty text.
    writer.writerows(tuple("\\N" if v is None else v for v in row) for row in rows)
    return buffer.getvalue()


def _copy_in(cur, table_sql: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """PostgreSQL COPY FROM STDIN (psycopg 3 or psycopg2) of rows into a table."""
    sql = (f"COPY {table_sql} ({', '.join(_ident(c) for c in columns)}) "
           "FROM STDIN WITH (FORMAT csv, NULL '\\N')")
    data = _csv(rows)
    if hasattr(cur, "copy_expert"):
        cur.copy_expert(sql, io.StringIO(data))
    else:
        with cur.copy(sql) as copy:
            copy.write(data)


def _insert(conn, dialect: str, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    if not rows:
        return
    cur = conn.cursor()
    if dialect == "postgres":
        _copy_in(cur, _table_name(table), columns, rows)
    else:
        marks = ", ".join([_placeholder(conn)] * len(columns))
        cur.executemany(
            f"INSERT INTO {_table_name(table)} ({', '.join(_ident(c) for c in columns)}) VALUES ({marks})",
            rows,
        )
    cur.close()


# --- output tables ----------------------------------------------------------------------


def _create_table_sql(table: str, columns: Sequence[str], kinds: dict[str, str], dialect: str,
                      primary_key: Sequence[str] = ()) -> str:
    types = _TYPES[dialect]
    parts = []
    for column in columns:
        null = " NOT NULL" if column in primary_key else ""
        parts.append(f"{_ident(column)} {types[kinds.get(column, 'text')]}{null}")
    if primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(_ident(c) for c in primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {_table_name(table)} ({', '.join(parts)})"


# Tables whose rows are replaced key by key within a run (record_batch, once per sent batch).
KEYED_RUN_TABLES = (tables.RESULTS_TABLE, tables.WARNINGS_TABLE)


def ensure_output_tables(conn_id: str) -> None:
    """Create the four output tables (and their keys/indexes) if they are missing."""
    with _connect(conn_id) as (conn, dialect):
        cur = conn.cursor()
        for table, columns in tables.OUTPUT_TABLES.items():
            key = ("entity", "entity_key") if table == tables.STATE_TABLE else ()
            cur.execute(_create_table_sql(table, columns, _OUTPUT_KINDS, dialect, key))
            if "run_id" not in columns or dialect == "generic":
                continue
            # Index names are per schema on PostgreSQL: prefix with the table name.
            if table in KEYED_RUN_TABLES:
                # With run_id alone, each key's DELETE scanned all the run's rows so far: at
                # 300k recorded rows a 100-customer batch took ~5.6 s to record on SQLite.
                cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{table}_run_key "
                            f"ON {_table_name(table)} (run_id, entity, entity_key)")
                # The key index serves run_id lookups too; tables made by earlier versions
                # lose the narrower one.
                cur.execute(f"DROP INDEX IF EXISTS ix_{table}_run_id")
            else:
                cur.execute(f"CREATE INDEX IF NOT EXISTS ix_{table}_run_id ON {_table_name(table)} (run_id)")
        cur.close()


def _output_frame(table: str, df: pd.DataFrame, run_id: str | None) -> pd.DataFrame:
    columns = tables.OUTPUT_TABLES[table]
    df = df.copy()
    if run_id is not None and "run_id" in columns:
        df["run_id"] = run_id
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"frame for {table} lacks column(s): {', '.join(missing)}")
    return df


def replace_run_rows(conn_id: str, table: str, run_id: str, df: pd.DataFrame) -> int:
    """Replace one run's rows of an output table (delete then insert, one transaction)."""
    if table not in tables.OUTPUT_TABLES or "run_id" not in tables.OUTPUT_TABLES[table]:
        raise ValueError(f"{table!r} is not a per-run output table")
    columns = tables.OUTPUT_TABLES[table]
    rows = _rows(_output_frame(table, df, run_id), columns)
    with _connect(conn_id) as (conn, dialect):
        cur = conn.cursor()
        cur.execute(f"DELETE FROM {_table_name(table)} WHERE run_id = {_placeholder(conn)}", (run_id,))
        cur.close()
        _insert(conn, dialect, table, columns, rows)
    log.info("Wrote %d row(s) to %s for run %s", len(rows), table, run_id)
    return len(rows)


# After an upsert this large PostgreSQL gets fresh statistics at once: without them (a new
# table, before autovacuum's turn) the next run's keyed state lookups scan the whole table.
ANALYZE_AFTER_ROWS = 10_000


def upsert_sync_state(conn_id: str, df: pd.DataFrame) -> int:
    """Insert or update sync-state rows by (entity, entity_key); a null capillary_id keeps the old one."""
    with _connect(conn_id) as (conn, dialect):
        written = _upsert_state(conn, dialect, df)
        if dialect == "postgres" and written >= ANALYZE_AFTER_ROWS:
            cur = conn.cursor()
            cur.execute(f"ANALYZE {tables.STATE_TABLE}")
            cur.close()
        return written


def record_batch(conn_id: str, run_id: str, *, results: pd.DataFrame, warnings: pd.DataFrame,
                 state: pd.DataFrame) -> None:
    """Record one sent batch in one transaction: its results, warnings and sync state.

    Because the three are written together right after the batch, a run killed at any
    point leaves results and state that agree, and the next run resumes from them.
    """
    with _connect(conn_id) as (conn, dialect):
        for table, frame in ((tables.RESULTS_TABLE, results), (tables.WARNINGS_TABLE, warnings)):
            _replace_keys(conn, dialect, table, run_id, _output_frame(table, frame, run_id), state)
        _upsert_state(conn, dialect, state)


def _replace_keys(conn, dialect: str, table: str, run_id: str, df: pd.DataFrame, keys: pd.DataFrame) -> None:
    """Delete this run's rows of the given (entity, entity_key) pairs, then insert ``df``."""
    mark = _placeholder(conn)
    cur = conn.cursor()
    cur.executemany(
        f"DELETE FROM {_table_name(table)} WHERE run_id = {mark} AND entity = {mark} AND entity_key = {mark}",
        [(run_id, entity, key) for entity, key in zip(keys["entity"], keys["entity_key"])],
    )
    cur.close()
    _insert(conn, dialect, table, tables.OUTPUT_TABLES[table], _rows(df, tables.OUTPUT_TABLES[table]))


def _upsert_state(conn, dialect: str, df: pd.DataFrame) -> int:
    table = tables.STATE_TABLE
    columns = tables.OUTPUT_TABLES[table]
    df = _output_frame(table, df, None)
    if df.empty:
        return 0
    # The last row of a key wins (one batch may report a customer twice: element and child).
    df = df.drop_duplicates(["entity", "entity_key"], keep="last")
    rows = _rows(df, columns)
    # In key order the primary key's B-tree grows at one end instead of being written all
    # over: a million-row upsert on SQLite took ~30 % less time. Keys are unique here,
    # so comparing rows never gets past (entity, entity_key).
    rows.sort()
    names = ", ".join(_ident(c) for c in columns)
    updates = ", ".join(
        f"{c} = COALESCE(excluded.{c}, {table}.{c})" if c == "capillary_id" else f"{c} = excluded.{c}"
        for c in columns if c not in ("entity", "entity_key")
    )
    conflict = f"ON CONFLICT (entity, entity_key) DO UPDATE SET {updates}"
    cur = conn.cursor()
    if dialect == "postgres":
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS tmp_{table} (LIKE {table}) ON COMMIT DROP")
        _copy_in(cur, f"tmp_{table}", columns, rows)
        cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM tmp_{table} {conflict}")
        cur.execute(f"DROP TABLE tmp_{table}")
    elif dialect == "sqlite":
        marks = ", ".join("?" * len(columns))
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) {conflict}", rows)
    else:
        # Portable path: delete the keys, insert the rows (same transaction).
        mark = _placeholder(conn)
        cur.executemany(f"DELETE FROM {table} WHERE entity = {mark} AND entity_key = {mark}",
                        [(r[0], r[1]) for r in rows])
        _insert(conn, dialect, table, columns, rows)
    cur.close()
    return len(rows)


STATE_KEYS_PER_QUERY = 500
STATE_KEYS_PER_ARRAY = 50_000
# Past this many keys one scan of the table is cheaper than looking the keys up.
STATE_KEYS_LOOKUP_LIMIT = 200_000


def read_sync_state(conn_id: str, entity: str | None = None, *, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """The sync state (optionally of one entity, and of some keys); empty if the table does not exist yet.

    With ``keys`` an incremental run reads only the rows it needs (by the primary key), so
    its cost follows what changed, not the size of the table.
    """
    columns = tables.OUTPUT_TABLES[tables.STATE_TABLE]
    sql = f"SELECT {', '.join(columns)} FROM {tables.STATE_TABLE}"
    if keys is not None and (entity is None or len(keys) > STATE_KEYS_LOOKUP_LIMIT):
        wanted = set(keys)
        state = read_sync_state(conn_id, entity)
        return state.loc[state["entity_key"].isin(wanted)].reset_index(drop=True)
    with _connect(conn_id) as (conn, dialect):
        mark = _placeholder(conn)
        cur = conn.cursor()
        rows: list[tuple] = []
        try:
            if entity is None:
                cur.execute(sql)
                rows = cur.fetchall()
            elif keys is None:
                cur.execute(f"{sql} WHERE entity = {mark}", (entity,))
                rows = cur.fetchall()
            elif dialect == "postgres":
                # One array parameter per query: 500-key IN lists cost PostgreSQL a plan
                # each (2-4 s for 50k keys, against 0.6 s this way).
                keys = list(dict.fromkeys(str(k) for k in keys))
                for start in range(0, len(keys), STATE_KEYS_PER_ARRAY):
                    cur.execute(f"{sql} WHERE entity = %s AND entity_key = ANY(%s)",
                                (entity, keys[start:start + STATE_KEYS_PER_ARRAY]))
                    rows.extend(cur.fetchall())
            else:
                keys = list(dict.fromkeys(str(k) for k in keys))
                for start in range(0, len(keys), STATE_KEYS_PER_QUERY):
                    chunk = keys[start:start + STATE_KEYS_PER_QUERY]
                    cur.execute(
                        f"{sql} WHERE entity = {mark} AND entity_key IN ({', '.join([mark] * len(chunk))})",
                        (entity, *chunk),
                    )
                    rows.extend(cur.fetchall())
        except Exception as exc:
            if "no such table" in str(exc) or "does not exist" in str(exc):
                return _state_frame([])
            raise
        cur.close()
    return _state_frame(rows)


def _state_frame(rows: list[tuple]) -> pd.DataFrame:
    columns = tables.OUTPUT_TABLES[tables.STATE_TABLE]
    values = list(zip(*rows)) if rows else [()] * len(columns)
    data = {c: pd.Series(v, dtype=object) for c, v in zip(columns, values)}
    data["capillary_id"] = pd.Series(pd.array([None if x is None else int(x) for x in data["capillary_id"]],
                                              dtype="Int64"))
    data["last_synced_at"] = pd.to_datetime(data["last_synced_at"], utc=True, format="ISO8601")
    return pd.DataFrame(data, columns=list(columns))


def read_table(conn_id: str, table: str, run_id: str | None = None) -> pd.DataFrame:
    """Rows of an output or input table (of one run when given), for reports and tests."""
    with _connect(conn_id) as (conn, _dialect):
        cur = conn.cursor()
        sql = f"SELECT * FROM {_table_name(table)}"
        if run_id is not None:
            cur.execute(f"{sql} WHERE run_id = {_placeholder(conn)}", (run_id,))
        else:
            cur.execute(sql)
        names = [d[0].lower() for d in cur.description]
        rows = cur.fetchall()
        cur.close()
    return pd.DataFrame.from_records(rows, columns=names).astype(object)


# --- input tables (demo, tests, benchmark) ----------------------------------------------


def ensure_input_tables(conn_id: str, *, timestamps_as_text: bool = False) -> None:
    """Create ``fleet_companies`` and ``customers`` as warehouse.md describes, with lookup indexes."""
    kinds = dict(_INPUT_KINDS)
    if timestamps_as_text:
        kinds.update({c: "text" for c, k in _INPUT_KINDS.items() if k in ("ts", "date")})
    with _connect(conn_id) as (conn, dialect):
        cur = conn.cursor()
        cur.execute(_create_table_sql("fleet_companies", tables.COMPANY_COLUMNS, kinds, dialect,
                                      ("company_external_id",)))
        cur.execute(_create_table_sql("customers", tables.CUSTOMER_COLUMNS, kinds, dialect,
                                      ("customer_key",)))
        if dialect != "generic":
            # The incremental extract walks parent links both ways and joins by company.
            cur.execute("CREATE INDEX IF NOT EXISTS ix_customers_parent ON customers (parent_customer_key)")
            cur.execute("CREATE INDEX IF NOT EXISTS ix_customers_company ON customers (company_external_id)")
            cur.execute("CREATE INDEX IF NOT EXISTS ix_customers_updated ON customers (updated_at)")
            cur.execute("CREATE INDEX IF NOT EXISTS ix_fleet_companies_updated ON fleet_companies (updated_at)")
        cur.close()


def load_frames(conn_id: str, companies: pd.DataFrame | None = None,
                customers: pd.DataFrame | None = None, *, replace: bool = True,
                timestamps_as_text: bool = False) -> None:
    """Load frames into the input tables (created if missing); ``replace`` empties them first."""
    ensure_input_tables(conn_id, timestamps_as_text=timestamps_as_text)
    with _connect(conn_id) as (conn, dialect):
        for table, frame in (("fleet_companies", companies), ("customers", customers)):
            if frame is None:
                continue
            columns = [c for c in INPUT_TABLES[table] if c in frame.columns]
            if replace:
                cur = conn.cursor()
                cur.execute(f"DELETE FROM {_table_name(table)}")
                cur.close()
            _insert(conn, dialect, table, columns, _rows(frame, columns))
