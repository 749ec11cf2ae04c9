"""What a run writes back: the output tables, their per-run rows, and the sync state.

Results, warnings and quarantine rows carry the run's ``run_id`` and are replaced per run
(or per key within a run, ``record_batch``), so a retried run never duplicates them; the
sync state is upserted by (entity, entity_key) and read back by the next run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from associate import tables
from associate.warehouse.dialect import (
    column_type,
    connect,
    create_index,
    create_table_sql,
    ident,
    placeholder,
    session,
    table_name,
    transaction,
)
from associate.warehouse.rows import copy_in, execute_pages, frame_rows, insert_rows

log = logging.getLogger(__name__)

# Column type kinds of the output tables (see dialect.create_table_sql); the rest is text.
OUTPUT_KINDS = {
    "run_id": "key", "entity": "key", "entity_key": "key",
    "capillary_id": "bigint", "error_code": "bigint", "code": "bigint", "attempts": "int",
    "quarantined_at": "ts", "synced_at": "ts", "last_synced_at": "ts",
}
TIMESTAMP_COLUMNS = tuple(c for c, kind in OUTPUT_KINDS.items() if kind == "ts")


# Tables whose rows are replaced key by key within a run (record_batch, once per sent batch).
KEYED_RUN_TABLES = (tables.RESULTS_TABLE, tables.WARNINGS_TABLE)


def ensure_output_tables(conn_id: str) -> None:
    """Create the four output tables (and their keys/indexes) if missing; add columns older versions lack."""
    with connect(conn_id) as (conn, dialect):
        cur = conn.cursor()
        for table, columns in tables.OUTPUT_TABLES.items():
            key = ("entity", "entity_key") if table == tables.STATE_TABLE else ()
            cur.execute(create_table_sql(table, columns, OUTPUT_KINDS, dialect, key))
            _add_missing_columns(cur, dialect, table, columns)
            if "run_id" not in columns or dialect == "generic":
                continue
            # Index names are per schema on PostgreSQL: prefix with the table name.
            if table in KEYED_RUN_TABLES:
                # With run_id alone, each key's DELETE scanned all the run's rows so far: at
                # 300k recorded rows a 100-customer batch took ~5.6 s to record on SQLite.
                create_index(cur, dialect, f"ix_{table}_run_key", table, ("run_id", "entity", "entity_key"))
                # The key index serves run_id lookups too; tables made by earlier versions
                # lose the narrower one (no MySQL table is that old).
                if dialect != "mysql":
                    cur.execute(f"DROP INDEX IF EXISTS ix_{table}_run_id")
            else:
                create_index(cur, dialect, f"ix_{table}_run_id", table, ("run_id",))
        cur.close()


def _add_missing_columns(cur, dialect: str, table: str, columns: Sequence[str]) -> None:
    """ALTER TABLE ADD COLUMN for every column a table made by an earlier version lacks."""
    cur.execute(f"SELECT * FROM {table_name(table, dialect)} WHERE 1 = 0")
    present = {d[0].lower() for d in cur.description}
    cur.fetchall()  # MySQL drivers want every result read before the next statement
    for column in columns:
        if column in present:
            continue
        sql_type = column_type(column, OUTPUT_KINDS, dialect)
        if dialect == "postgres":
            # Another task may add it at the same moment: IF NOT EXISTS keeps the transaction alive.
            cur.execute(f"ALTER TABLE {table_name(table)} ADD COLUMN IF NOT EXISTS {ident(column)} {sql_type}")
            continue
        try:
            cur.execute(f"ALTER TABLE {table_name(table, dialect)} ADD COLUMN {ident(column, dialect)} {sql_type}")
        except Exception as exc:  # a concurrent task added it first ("duplicate column name")
            if "duplicate" not in str(exc).lower() and "exists" not in str(exc).lower():
                raise
        log.info("Added column %s to %s (made by an earlier version)", column, table)


def _output_frame(table: str, df: pd.DataFrame, run_id: str | None) -> pd.DataFrame:
    columns = tables.OUTPUT_TABLES[table]
    df = df.copy()
    if table == tables.STATE_TABLE:
        # State rows of callers that know no association (companies, old outcomes): unknown.
        for column in tables.STATE_ASSOCIATION:
            if column not in df.columns:
                df[column] = None
    if run_id is not None and "run_id" in columns:
        df["run_id"] = run_id
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"frame for {table} lacks column(s): {', '.join(missing)}")
    return df


def _rows(df: pd.DataFrame, columns: Sequence[str], dialect: str) -> list[tuple]:
    """A frame's rows as the dialect takes them: on MySQL/MariaDB times are naive UTC (DATETIME)."""
    if dialect != "mysql":
        return frame_rows(df, columns)
    df = df.copy()
    for column in TIMESTAMP_COLUMNS:
        # Times given as text (ISO-8601 with an offset) become instants, then naive UTC.
        if column in df.columns and not pd.api.types.is_datetime64_any_dtype(df[column].dtype):
            df[column] = pd.to_datetime(df[column], utc=True, format="ISO8601")
    return frame_rows(df, columns, naive_utc=True)


def replace_run_rows(conn_id: str, table: str, run_id: str, df: pd.DataFrame) -> int:
    """Replace one run's rows of an output table (delete then insert, one transaction)."""
    if table not in tables.OUTPUT_TABLES or "run_id" not in tables.OUTPUT_TABLES[table]:
        raise ValueError(f"{table!r} is not a per-run output table")
    columns = tables.OUTPUT_TABLES[table]
    frame = _output_frame(table, df, run_id)
    with connect(conn_id) as (conn, dialect):
        rows = _rows(frame, columns, dialect)
        cur = conn.cursor()
        cur.execute(f"DELETE FROM {table_name(table, dialect)} WHERE run_id = {placeholder(conn)}", (run_id,))
        cur.close()
        insert_rows(conn, dialect, table, columns, rows)
    log.info("Wrote %d row(s) to %s for run %s", len(rows), table, run_id)
    return len(rows)


# After an upsert this large PostgreSQL gets fresh statistics at once: without them (a new
# table, before autovacuum's turn) the next run's keyed state lookups scan the whole table.
ANALYZE_AFTER_ROWS = 10_000


def upsert_sync_state(conn_id: str, df: pd.DataFrame) -> int:
    """Insert or update sync-state rows by (entity, entity_key); a null capillary_id keeps the old one."""
    with connect(conn_id) as (conn, dialect):
        written = _upsert_state(conn, dialect, df)
        if dialect == "postgres" and written >= ANALYZE_AFTER_ROWS:
            cur = conn.cursor()
            cur.execute(f"ANALYZE {tables.STATE_TABLE}")
            cur.close()
        return written


def record_batch(conn_id: str, run_id: str, *, results: pd.DataFrame, warnings: pd.DataFrame,
                 state: pd.DataFrame) -> None:
    """Record one sent batch on a connection of its own (``BatchRecorder.record``)."""
    with BatchRecorder(conn_id, run_id) as recorder:
        recorder.record(results=results, warnings=warnings, state=state)


class BatchRecorder:
    """Records sent batches over one warehouse connection, each batch in a transaction of its own.

    A connection per batch cost a connect every hundred customers (on a remote warehouse a
    TLS handshake and a login too). A reused connection that fails is replaced once:
    recording a batch again replaces its rows by key.
    """

    def __init__(self, conn_id: str, run_id: str):
        self.conn_id, self.run_id = conn_id, run_id
        self._open = contextlib.ExitStack()
        self._conn: tuple[Any, str] | None = None

    def __enter__(self) -> BatchRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, *, results: pd.DataFrame, warnings: pd.DataFrame, state: pd.DataFrame) -> None:
        """Record one sent batch in one transaction: its results, warnings and sync state.

        Because the three are written together right after the batch, a run killed at any
        point leaves results and state that agree, and the next run resumes from them.
        """
        reused = self._conn is not None
        try:
            self._write(results, warnings, state)
        except Exception as exc:
            self.close()
            if not reused:
                raise
            log.info("Recording the batch on a new warehouse connection (the open one failed: %s)", type(exc).__name__)
            self._write(results, warnings, state)

    def _write(self, results: pd.DataFrame, warnings: pd.DataFrame, state: pd.DataFrame) -> None:
        if self._conn is None:
            self._conn = self._open.enter_context(session(self.conn_id))
        conn, dialect = self._conn
        with transaction(conn):
            for table, frame in ((tables.RESULTS_TABLE, results), (tables.WARNINGS_TABLE, warnings)):
                _replace_keys(conn, dialect, table, self.run_id, _output_frame(table, frame, self.run_id), state)
            _upsert_state(conn, dialect, state)

    def close(self) -> None:
        """Close the connection (a later ``record`` opens a new one)."""
        self._conn = None
        self._open.close()


def drop_stale_run_rows(conn_id: str, run_id: str, keep: pd.DataFrame) -> int:
    """Delete a run's results and warnings of entities not in ``keep`` (``entity``, ``entity_key``: unique pairs).

    Rows replaced by key (``record_batch``) outlive an earlier try of the same run whose
    entities this try no longer has (a run cleared and run again). Counting the run's
    results is cheap (the run key index): the keys are read only when there are too many.
    """
    with connect(conn_id) as (conn, dialect):
        mark = placeholder(conn)
        cur = conn.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {table_name(tables.RESULTS_TABLE, dialect)} WHERE run_id = {mark}",
                    (run_id,))
        count = int(cur.fetchone()[0])
        if count <= len(keep):  # every entity of the run has its one row: nothing left over
            cur.close()
            return 0
        wanted = set(zip(keep["entity"].astype(str), keep["entity_key"].astype(str)))
        dropped = 0
        for table in KEYED_RUN_TABLES:
            cur.execute(f"SELECT DISTINCT entity, entity_key FROM {table_name(table, dialect)} "
                        f"WHERE run_id = {mark}", (run_id,))
            stale = sorted({(str(e), str(k)) for e, k in cur.fetchall()} - wanted)
            if stale:
                keys = pd.DataFrame(stale, columns=["entity", "entity_key"])
                _replace_keys(conn, dialect, table, run_id, _output_frame(table, _no_rows(table), run_id), keys)
                dropped += len(stale) if table == tables.RESULTS_TABLE else 0
        cur.close()
    log.info("Dropped %d result(s) of run %s left by an earlier try (entities this try has no outcome of)",
             dropped, run_id)
    return dropped


def _no_rows(table: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in tables.OUTPUT_TABLES[table]})


def _replace_keys(conn, dialect: str, table: str, run_id: str, df: pd.DataFrame, keys: pd.DataFrame) -> None:
    """Delete this run's rows of the given (entity, entity_key) pairs, then insert ``df``."""
    mark = placeholder(conn)
    cur = conn.cursor()
    sql = f"DELETE FROM {table_name(table, dialect)} WHERE run_id = {mark} AND entity = {mark} AND entity_key"
    by_entity: dict[str, list[str]] = {}
    for entity, key in zip(keys["entity"], keys["entity_key"]):
        by_entity.setdefault(entity, []).append(key)
    if dialect == "postgres":
        # Pages of statements: psycopg2's executemany is a round trip per row. (One `= ANY(array)` is
        # planned on stale statistics, the run's rows growing from none: it scanned the whole table.)
        execute_pages(cur, f"{sql} = {mark}", [(run_id, e, key) for e, keys in by_entity.items() for key in keys])
    elif dialect == "mysql":
        # So do MySQL drivers: one IN list per entity instead (the run key index serves it as ranges).
        for entity, entity_keys in by_entity.items():
            for start in range(0, len(entity_keys), STATE_KEYS_PER_QUERY):
                part = entity_keys[start:start + STATE_KEYS_PER_QUERY]
                cur.execute(f"{sql} IN ({', '.join([mark] * len(part))})", (run_id, entity, *part))
    else:
        cur.executemany(f"{sql} = {mark}", [(run_id, entity, key) for entity, ks in by_entity.items() for key in ks])
    cur.close()
    insert_rows(conn, dialect, table, tables.OUTPUT_TABLES[table], _rows(df, tables.OUTPUT_TABLES[table], dialect))


# A null in these keeps the stored value: a failed send knows no new id, and moves no
# association (the state keeps the association Capillary was last seen to hold).
_KEPT_WHEN_NULL = ("capillary_id", *tables.STATE_ASSOCIATION)


def _upsert_state(conn, dialect: str, df: pd.DataFrame) -> int:
    table = tables.STATE_TABLE
    columns = tables.OUTPUT_TABLES[table]
    df = _output_frame(table, df, None)
    if df.empty:
        return 0
    # The last row of a key wins (one batch may report a customer twice: element and child).
    df = df.drop_duplicates(["entity", "entity_key"], keep="last")
    rows = _rows(df, columns, dialect)
    # In key order the primary key's B-tree grows at one end instead of being written all
    # over: a million-row upsert on SQLite took ~30 % less time. Keys are unique here,
    # so comparing rows never gets past (entity, entity_key).
    rows.sort()
    names = ", ".join(ident(c, dialect) for c in columns)
    updates = ", ".join(
        f"{c} = COALESCE(excluded.{c}, {table}.{c})" if c in _KEPT_WHEN_NULL else f"{c} = excluded.{c}"
        for c in columns if c not in ("entity", "entity_key")
    )
    conflict = f"ON CONFLICT (entity, entity_key) DO UPDATE SET {updates}"
    cur = conn.cursor()
    if dialect == "postgres":
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS tmp_{table} (LIKE {table}) ON COMMIT DROP")
        copy_in(cur, f"tmp_{table}", columns, rows)
        cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM tmp_{table} {conflict}")
        cur.execute(f"DROP TABLE tmp_{table}")
    elif dialect == "sqlite":
        marks = ", ".join("?" * len(columns))
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) {conflict}", rows)
    elif dialect == "mysql":
        # VALUES(c) is the row that collided (MariaDB and MySQL both read it; MySQL 8.0.20+
        # warns it is deprecated). The drivers send the rows as multi-row INSERTs.
        marks = ", ".join(["%s"] * len(columns))
        updates = ", ".join(
            f"{c} = COALESCE(VALUES({c}), {c})" if c in _KEPT_WHEN_NULL else f"{c} = VALUES({c})"
            for c in columns if c not in ("entity", "entity_key")
        )
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {updates}", rows)
    else:
        # Portable path: delete the keys, insert the rows (same transaction); nulls in the
        # kept columns take the stored values first, as COALESCE does on the other paths.
        mark = placeholder(conn)
        rows = _keep_stored(cur, mark, columns, rows)
        cur.executemany(f"DELETE FROM {table} WHERE entity = {mark} AND entity_key = {mark}",
                        [(r[0], r[1]) for r in rows])
        insert_rows(conn, dialect, table, columns, rows)
    cur.close()
    return len(rows)


def _keep_stored(cur, mark: str, columns: Sequence[str], rows: list[tuple]) -> list[tuple]:
    """Rows with their null kept columns (``_KEPT_WHEN_NULL``) filled from the stored state rows."""
    kept = [columns.index(c) for c in _KEPT_WHEN_NULL]
    needy = [r for r in rows if any(r[i] is None for i in kept)]
    stored: dict[tuple, tuple] = {}
    names = ", ".join(["entity", "entity_key", *_KEPT_WHEN_NULL])
    for start in range(0, len(needy), STATE_KEYS_PER_QUERY):
        part = needy[start:start + STATE_KEYS_PER_QUERY]
        where = " OR ".join([f"(entity = {mark} AND entity_key = {mark})"] * len(part))
        cur.execute(f"SELECT {names} FROM {tables.STATE_TABLE} WHERE {where}",
                    [v for r in part for v in (r[0], r[1])])
        stored.update({(row[0], row[1]): row[2:] for row in cur.fetchall()})
    out = []
    for row in rows:
        old = stored.get((row[0], row[1]))
        if old is not None:
            row = list(row)
            for i, value in zip(kept, old):
                row[i] = value if row[i] is None else row[i]
            row = tuple(row)
        out.append(row)
    return out


STATE_KEYS_PER_QUERY = 500
STATE_KEYS_PER_ARRAY = 50_000
# Past this many keys one scan of the table is cheaper than looking the keys up.
STATE_KEYS_LOOKUP_LIMIT = 200_000


def _rows_of_keys(state: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The state's rows whose ``entity_key`` is among ``keys``.

    Filtered by Arrow, not by a Python set of the keys: building that set and probing it
    cost 2 s at a million keys, even against an empty state.
    """
    if state.empty:
        return state
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pc.is_in(pa.array(state["entity_key"].astype(str).to_numpy(dtype=object), type=pa.large_string()),
                      value_set=pa.array([str(k) for k in keys], type=pa.large_string()))
    return state.loc[wanted.to_numpy(zero_copy_only=False)].reset_index(drop=True)


def read_sync_state(conn_id: str, entity: str | None = None, *, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """The sync state (optionally of one entity, and of some keys); empty if the table does not exist yet.

    With ``keys`` an incremental run reads only the rows it needs (by the primary key), so
    its cost follows what changed, not the size of the table.
    """
    columns = tables.OUTPUT_TABLES[tables.STATE_TABLE]
    sql = f"SELECT {', '.join(columns)} FROM {tables.STATE_TABLE}"
    if keys is not None and (entity is None or len(keys) > STATE_KEYS_LOOKUP_LIMIT):
        return _rows_of_keys(read_sync_state(conn_id, entity), keys)
    with connect(conn_id) as (conn, dialect):
        mark = placeholder(conn)
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
            text = str(exc).lower()
            if "column" in text and ("no such" in text or "does not exist" in text or "unknown column" in text):
                old_table = True  # made by an earlier version: add the columns, then read again
            elif "no such table" in text or "does not exist" in text or "doesn't exist" in text:
                return _state_frame([])
            else:
                raise
        else:
            old_table = False
            cur.close()
    if old_table:
        ensure_output_tables(conn_id)
        return read_sync_state(conn_id, entity, keys=keys)
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
    with connect(conn_id) as (conn, dialect):
        cur = conn.cursor()
        sql = f"SELECT * FROM {table_name(table, dialect)}"
        if run_id is not None:
            cur.execute(f"{sql} WHERE run_id = {placeholder(conn)}", (run_id,))
        else:
            cur.execute(sql)
        names = [d[0].lower() for d in cur.description]
        rows = cur.fetchall()
        cur.close()
    return pd.DataFrame.from_records(rows, columns=names).astype(object)
