"""Frames as DB-API rows, and their bulk insert: PostgreSQL ``COPY``, ``executemany`` elsewhere.

On SQLite the ``executemany`` runs inside the caller's one transaction (``dialect.connect``);
MySQL drivers (mysqlclient, mysql-connector-python) turn an ``executemany`` INSERT into
multi-row INSERT statements themselves.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from associate.warehouse.dialect import ident, placeholder, table_name


def _db_value(value: Any, naive_utc: bool = False) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat() if naive_utc else value.isoformat() + "+00:00"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalars
    if value is pd.NA:
        return None
    return value


def db_columns(df: pd.DataFrame, columns: Sequence[str], *, naive_utc: bool = False) -> list[list[Any]]:
    """Return columns of a frame as lists of DB-API values: None for missing, ISO text for times.

    Times are UTC with ``+00:00``, or with ``naive_utc`` without it: MySQL/MariaDB
    refuse an offset in a DATETIME value.
    """
    out = []
    for column in columns:
        series = df[column]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            out.append(_iso_list(series, "" if naive_utc else "+00:00"))
        elif pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
            out.append([None if v is pd.NA or v is None else int(v) for v in series.tolist()])
        elif pd.api.types.is_float_dtype(series.dtype):
            # Float ids (an int column with NaN) go back to int when they are whole.
            out.append([None if v != v else (int(v) if float(v).is_integer() else v) for v in series.tolist()])
        elif series.dtype == "str" or pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
            # Text only (checked in C): no value needs converting, only missing ones. Lists, not
            # pandas operations: a batch of 100 rows is recorded a thousand times per 100k customers.
            out.append([v if isinstance(v, str) else None for v in series.tolist()])
        else:
            out.append([_db_value(v, naive_utc) for v in series.astype(object).tolist()])
    return out


def _iso_list(series: pd.Series, offset: str) -> list[str | None]:
    """``YYYY-MM-DDTHH:MM:SS.ffffff<offset>`` (UTC; naive values are UTC), None where missing."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy(dtype="datetime64[us]")
    # numpy formats in C; strftime with %f costs seconds per million values.
    text = np.datetime_as_string(values, unit="us").tolist()
    missing = np.isnat(values)
    return [None if gone else t + offset for t, gone in zip(text, missing.tolist())]


def frame_rows(df: pd.DataFrame, columns: Sequence[str], *, naive_utc: bool = False) -> list[tuple]:
    """Return the frame's ``columns`` as DB-API row tuples (see ``db_columns``)."""
    return list(zip(*db_columns(df, columns, naive_utc=naive_utc))) if len(df) else []


def _csv(rows: list[tuple]) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # '\N' marks NULL, so empty text stays empty text.
    writer.writerows(tuple("\\N" if v is None else v for v in row) for row in rows)
    return buffer.getvalue()


def copy_in(cur, table_sql: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """PostgreSQL COPY FROM STDIN (psycopg 3 or psycopg2) of rows into a table."""
    sql = (f"COPY {table_sql} ({', '.join(ident(c) for c in columns)}) "
           "FROM STDIN WITH (FORMAT csv, NULL '\\N')")
    data = _csv(rows)
    if hasattr(cur, "copy_expert"):
        cur.copy_expert(sql, io.StringIO(data))
    else:
        with cur.copy(sql) as copy:
            copy.write(data)


def execute_pages(cur, sql: str, params: list[tuple], page_size: int = 500) -> None:
    """``executemany`` for PostgreSQL: psycopg2's sends a statement per round trip, its ``execute_batch`` a page."""
    try:
        from psycopg2.extensions import cursor as psycopg2_cursor
        from psycopg2.extras import execute_batch
    except ImportError:  # psycopg 3 pipelines executemany itself
        psycopg2_cursor = None
    if psycopg2_cursor is not None and isinstance(cur, psycopg2_cursor):
        execute_batch(cur, sql, params, page_size=page_size)
    else:
        cur.executemany(sql, params)


def insert_rows(conn, dialect: str, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """Insert rows into a table of ``associate.tables`` in the connection's open transaction."""
    if not rows:
        return
    cur = conn.cursor()
    if dialect == "postgres":
        copy_in(cur, table_name(table), columns, rows)
    else:
        marks = ", ".join([placeholder(conn)] * len(columns))
        cur.executemany(
            f"INSERT INTO {table_name(table, dialect)} ({', '.join(ident(c, dialect) for c in columns)}) "
            f"VALUES ({marks})",
            rows,
        )
    cur.close()
