"""The extract: render the user's SQL for a run, run it, and return canonical frames.

Which rows a run reads is the SQL's business (``dags/sql``, Jinja-templated with the run's
interval); this module picks the file for the dialect, streams the result column by column
and turns it into the contract's columns, in contract order.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from associate import config, tables
from associate.exceptions import ExtractError, WarehouseError
from associate.warehouse.dialect import db_hook, dialect_of, utc_session

log = logging.getLogger(__name__)

MODES = ("full", "incremental")
ENTITY_SQL = {"customers": "extract_customers.sql", "companies": "extract_companies.sql"}
COUNT_CHANGED_SQL = "count_changed.sql"
FETCH_ROWS = 50_000
# Blocks converted to Arrow as they are fetched: small enough that a block's Python objects
# are still in the CPU cache when Arrow reads them (50,000 rows took 1.8x the CPU of 2,000).
ARROW_FETCH_ROWS = 2_000
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
    """The mode an extract really runs: without a (non-empty) interval, a full one.

    The DAG's runs always have an interval (``associate.tasks.run_interval``, also for a
    run without a logical date); this covers callers outside Airflow.
    """
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
    """Render the extract SQL of an entity for a dialect; return (sql, path of the file)."""
    return _render_sql(ENTITY_SQL[_entity(entity)], dialect, mode=mode, interval_start=interval_start,
                       interval_end=interval_end, sql_dir=sql_dir)


def _render_sql(name: str, dialect: str, *, mode: str, interval_start: Any, interval_end: Any,
                sql_dir: str | Path | None) -> tuple[str, Path]:
    import jinja2

    base = Path(sql_dir) if sql_dir else default_sql_dir()
    folders = [base / dialect, base / "generic"]
    path = next((f / name for f in folders if (f / name).is_file()), None)
    if path is None:
        raise ExtractError(f"no {name} under {base} (looked in {', '.join(map(str, folders))}): "
                           f"set [associate] sql_dir to the folder of the extract SQL")
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
    """Run the extract SQL of ``customer``/``customers`` or ``company``/``companies``; return the canonical frame.

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
        if arrow_text:
            names, frame = _read_query(hook, dialect, conn_id, sql, path,
                                       lambda cur: _fetch_arrow_frame(entity, cur), stream=True)
            if frame is not None:
                return frame
            columns = [[] for _ in names]  # no rows, or a required column missing: said below as ever
        else:
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
    """Run one query of the extract SQL; return (column names, ``read(cursor)``); errors name the file."""
    conn = hook.get_conn()
    try:
        if dialect == "postgres":
            # Naive `timestamp` columns then read as UTC, as everywhere else in the pipeline.
            setup = conn.cursor()
            setup.execute("SET TIME ZONE 'UTC'")
            setup.close()
        elif dialect == "mysql":
            utc_session(conn)  # TIMESTAMP columns then read as UTC; DATETIME is taken as UTC
        cur = _streaming_cursor(conn, dialect) if stream else conn.cursor()
        try:
            cur.execute(sql)
            result = read(cur)
        except Exception as exc:
            raise WarehouseError(f"{path} failed on connection {conn_id!r}: {exc}") from exc
        names = [d[0].lower() for d in cur.description]
        cur.close()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()
    return names, result


def _streaming_cursor(conn, dialect: str):
    """A cursor that never buffers the whole result in the client, where the driver has one."""
    if dialect == "postgres":
        return conn.cursor(name="associate_extract")  # server-side cursor
    if dialect == "mysql" and type(conn).__module__.startswith("MySQLdb"):
        import MySQLdb.cursors

        return conn.cursor(MySQLdb.cursors.SSCursor)  # rows come off the socket as fetched
    return conn.cursor()  # mysql-connector-python's default cursor is unbuffered already


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


def _output_columns(entity: str, names: Sequence[str]) -> list[str]:
    """The columns of the canonical frame, in order: the contract's, then the optional ones the query returned."""
    columns = list(ENTITY_COLUMNS[entity])
    if entity == "customers":
        columns += [c for c in (tables.CUSTOMER_CHILD_COUNT, tables.CUSTOMER_PUSH_TOKEN) if c in names]
    return columns


def _is_int_column(column: str) -> bool:
    return column in INT_COLUMNS or column == tables.CUSTOMER_CHILD_COUNT


class _ArrowColumn:
    """One column of a streamed extract, converted to Arrow block by block while its values allow.

    Values are Arrow-converted as they are fetched, so no million-row list of Python objects
    is ever held: an int column of nothing but int (or None) is int64, any other column of
    nothing but text is string. A block holding anything else (a number in a text column,
    text or a float in an int column, a datetime, a Decimal) turns the column back into
    Python values, which the canonical conversion (``_python_column``) then takes as a
    whole, exactly as the value-by-value read does.
    """

    __slots__ = ("name", "chunks", "values")

    def __init__(self, name: str):
        self.name = name
        self.chunks: list = []
        self.values: list | None = None  # Python values once the column left Arrow

    def add(self, values: Sequence[Any]) -> None:
        import pyarrow as pa

        if self.values is None:
            try:
                if _is_int_column(self.name):
                    # Inferred, never cast: a cast would take 1.5 or True for an int.
                    array = pa.array(values)
                    if pa.types.is_null(array.type):
                        array = array.cast(pa.int64())
                    elif not pa.types.is_int64(array.type):
                        raise TypeError(array.type)
                else:
                    # string, not large_string: from Python objects Arrow builds it 8x faster.
                    array = pa.array(values, type=pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                # What Arrow took so far was plain int or text: its Python values are the fetched ones.
                self.values = [v for chunk in self.chunks for v in chunk.to_pylist()]
                self.chunks = []
            else:
                self.chunks.append(array)
                return
        self.values.extend(values)

    def series(self) -> pd.Series:
        import pyarrow as pa

        if self.values is not None:
            return _python_column(self.name, self.values, arrow_text=False)
        array = pa.chunked_array(self.chunks)
        if _is_int_column(self.name):
            return array.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        if array.null_count == len(array):
            return pd.Series([None] * len(array), dtype=object)  # no text at all: staged as before, with no type
        return array.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get)


def _fetch_arrow_frame(entity: str, cur) -> pd.DataFrame | None:
    """The result as the canonical frame with Arrow-backed text, fetched in blocks.

    None when there is no row or a required column is missing (the caller says which, as
    for the value-by-value read).
    """
    names = [d[0].lower() for d in cur.description]
    if any(c not in names for c in ENTITY_COLUMNS[entity]):
        return None
    position = {name: i for i, name in enumerate(names)}
    columns = [_ArrowColumn(name) for name in _output_columns(entity, names)]
    wanted = [position[column.name] for column in columns]
    rows = 0
    while True:
        block = cur.fetchmany(ARROW_FETCH_ROWS)
        if not block:
            break
        rows += len(block)
        by_column = list(zip(*block))
        del block  # each block's Python objects go as soon as Arrow holds their values
        for column, i in zip(columns, wanted):
            column.add(by_column[i])
            by_column[i] = None
    if not rows:
        return None
    return pd.DataFrame({column.name: column.series() for column in columns})


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
            f"for {entity}; it returned: {', '.join(names) or 'nothing'}. Edit the query so that it "
            f"returns every column of the warehouse contract (docs/warehouse.md)"
        )
    position = {name: i for i, name in enumerate(names)}
    data = {}
    for column in _output_columns(entity, names):
        values = columns[position[column]]
        columns[position[column]] = []  # each raw column is freed once converted
        data[column] = _python_column(column, values, arrow_text=arrow_text)
    return pd.DataFrame(data, columns=list(data))


def _python_column(column: str, values: list[Any], *, arrow_text: bool) -> pd.Series:
    """One column of Python values as the contract says: ints, text (or Arrow text), timestamps and dates raw."""
    if _is_int_column(column):
        return _int_column(values)
    if arrow_text and column != tables.CUSTOMER_PUSH_TOKEN and (text := _arrow_text(values)) is not None:
        return text
    if column in TIMESTAMP_COLUMNS or column in DATE_COLUMNS:
        return pd.Series(values, dtype=object)
    return pd.Series([v if v is None or type(v) is str else _text(v) for v in values], dtype=object)


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

