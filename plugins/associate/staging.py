"""Staging of data between tasks: Parquet files under an ``ObjectStoragePath`` base.

Tasks pass only the URIs these functions return (through XCom); the frames themselves
live in object storage (a local folder by default, ``s3://...``, ``gs://...`` by config),
so the DAG runs unchanged on Celery or Kubernetes workers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from associate import config

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd
    from airflow.sdk import ObjectStoragePath

# Columns where every value differs: a Parquet dictionary for them is built, abandoned
# and still slows every read (2x on a million payloads).
UNIQUE_TEXT_COLUMNS = frozenset({"payload", "payload_hash"})


def _dictionary_columns(columns) -> list[str]:
    return [str(c) for c in columns if c not in UNIQUE_TEXT_COLUMNS]


def staging_base() -> ObjectStoragePath:
    """The staging root (setting ``staging_base``)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(config.staging_base())


def safe_name(part: str) -> str:
    """A path segment safe for every object store (run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._=-]", "_", part)


def run_path(run_id: str, *parts: str) -> ObjectStoragePath:
    """The staging location of one run (and a file or folder in it)."""
    path = staging_base() / safe_name(run_id)
    for part in parts:
        path = path / part
    return path


def write_frame(df: pd.DataFrame, path: ObjectStoragePath | str) -> str:
    """Write a frame as Parquet and return its URI (what goes through XCom)."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if df.attrs:
        # Stage modules may keep working data in attrs; a staged file carries rows only.
        df = df.copy(deep=False)
        df.attrs = {}
    # Written under a temporary name and renamed: a task killed mid-write leaves no
    # truncated file that a retry would take for a finished one.
    partial = path.parent / (path.name + ".partial")
    try:
        with partial.open("wb") as handle:
            df.to_parquet(handle, index=False, use_dictionary=_dictionary_columns(df.columns))
    except (ValueError, TypeError):  # pyarrow's ArrowInvalid / ArrowTypeError derive from these
        with partial.open("wb") as handle:
            _mixed_columns_as_text(df).to_parquet(handle, index=False,
                                                  use_dictionary=_dictionary_columns(df.columns))
    partial.rename(path)
    return str(path)


class FrameWriter:
    """Writes one staged Parquet file frame by frame, so a large result never sits in memory whole.

    Used as a context manager; the file appears (atomically, as with ``write_frame``)
    only when the block ends without an error. ``empty`` gives the columns and types of
    the file when no rows were written, and the schema every frame is cast to.
    """

    def __init__(self, path: ObjectStoragePath | str, empty: pd.DataFrame):
        from airflow.sdk import ObjectStoragePath

        self.path = ObjectStoragePath(str(path))
        self.uri = str(self.path)
        self.rows = 0
        # Key-value metadata of the file's footer (``footer``), set before the block ends.
        self.metadata: dict[str, str] = {}
        self._empty = empty
        self._schema = None
        self._writer = None
        self._handle = None

    def __enter__(self) -> FrameWriter:
        import pyarrow as pa

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.parent / (self.path.name + ".partial")
        self._schema = pa.Schema.from_pandas(self._empty, preserve_index=False)
        # pandas' metadata kept: read back, nullable ints are Int64 again (not float64).
        self._schema = pa.schema([
            field.with_type(pa.large_string()) if pa.types.is_null(field.type) else field
            for field in self._schema
        ], metadata=self._schema.metadata)
        return self

    def write(self, df: pd.DataFrame) -> None:
        """Append the rows of one frame (its columns in the order of ``empty``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if df.empty:
            return
        table = pa.Table.from_pandas(df[list(self._empty.columns)], schema=self._schema, preserve_index=False)
        if self._writer is None:
            self._handle = self._partial.open("wb")
            self._writer = pq.ParquetWriter(self._handle, self._schema,
                                            use_dictionary=_dictionary_columns(self._schema.names))
        self._writer.write_table(table)
        self.rows += len(df)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            if self.metadata and exc_type is None:
                self._writer.add_key_value_metadata(self.metadata)
            self._writer.close()
            self._handle.close()
        if exc_type is not None:
            if self._partial.exists():
                self._partial.unlink()
            return
        if self._writer is None:
            write_frame(self._empty, self.path)
        else:
            self._partial.rename(self.path)


def _mixed_columns_as_text(df: pd.DataFrame) -> pd.DataFrame:
    """A copy where object columns holding values of several types hold their text instead.

    A warehouse column may mix types (SQLite keeps each value's own type); Parquet cannot.
    As text the values still reach validation, which names what is wrong with them.
    """
    df = df.copy(deep=False)
    for column in df.columns[df.dtypes == object]:
        values = df[column]
        present = values.notna()
        if values[present].map(type).nunique() > 1:
            df[column] = values.where(~present, values.astype(str)).astype(object)
    return df


def read_frame(uri: ObjectStoragePath | str, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a frame staged by ``write_frame`` (with ``columns``: only those of them it has)."""
    import pandas as pd
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(str(uri)).open("rb") as handle:
        if columns is None:
            return pd.read_parquet(handle)
        present = set(pq.read_schema(handle).names)
        handle.seek(0)
        return pd.read_parquet(handle, columns=[c for c in columns if c in present])


def read_columns(uri: ObjectStoragePath | str, columns: list[str]) -> pd.DataFrame:
    """Read only some columns of a staged frame."""
    import pandas as pd
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(str(uri)).open("rb") as handle:
        return pd.read_parquet(handle, columns=columns)


class Footer(NamedTuple):
    """What a staged file's footer says: its rows, and its key-value metadata (``FrameWriter.metadata``)."""

    rows: int
    metadata: dict[str, str]


def footer(uri: ObjectStoragePath | str) -> Footer:
    """Read a staged file's footer (one read: on object storage each is a request)."""
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(str(uri)).open("rb") as handle:
        found = pq.ParquetFile(handle).metadata
    # pandas' and Arrow's own entries are the schema, not ours.
    metadata = {key.decode(): value.decode() for key, value in (found.metadata or {}).items()
                if key not in (b"pandas", b"ARROW:schema")}
    return Footer(found.num_rows, metadata)


def column_names(uri: ObjectStoragePath | str) -> list[str]:
    """The columns of a staged file, from its footer."""
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(str(uri)).open("rb") as handle:
        return list(pq.read_schema(handle).names)


def iter_tables(uri: ObjectStoragePath | str):
    """A staged file as Arrow tables, one per row group (to route rows without loading the file twice)."""
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(str(uri)).open("rb") as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group)


def iter_row_range(uri: ObjectStoragePath | str, start: int, stop: int, columns: list[str] | None = None):
    """Rows ``[start, stop)`` of a staged file as Arrow tables, one per row group that holds some of them."""
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(str(uri)).open("rb") as handle:
        parquet = pq.ParquetFile(handle)
        offset = 0
        for group in range(parquet.num_row_groups):
            if offset >= stop:
                break
            rows = parquet.metadata.row_group(group).num_rows
            if offset + rows > start:
                first = max(start - offset, 0)
                yield parquet.read_row_group(group, columns=columns).slice(first, min(stop - offset, rows) - first)
            offset += rows


def iter_frames(uri: ObjectStoragePath | str):
    """A staged file as frames (as ``read_frame`` makes them), one per row group: work starts on the first."""
    for table in iter_tables(uri):
        yield table.to_pandas()


def write_table(table, path: ObjectStoragePath | str, row_group_size: int | None = None) -> str:
    """Write an Arrow table as Parquet (atomically, as ``write_frame``) and return its URI."""
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / (path.name + ".partial")
    with partial.open("wb") as handle:
        pq.write_table(table, handle, row_group_size=row_group_size,
                       use_dictionary=_dictionary_columns(table.column_names))
    partial.rename(path)
    return str(path)


def exists(uri: ObjectStoragePath | str) -> bool:
    """Whether a staged file exists (used to resume a task where it stopped)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(str(uri)).exists()


def write_json(obj: object, path: ObjectStoragePath | str) -> str:
    """Write a small JSON document (run statistics) and return its URI."""
    import json

    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, default=str))
    return str(path)


def read_json(uri: ObjectStoragePath | str) -> object:
    """Read a document written by ``write_json``."""
    import json

    from airflow.sdk import ObjectStoragePath

    return json.loads(ObjectStoragePath(str(uri)).read_text())
