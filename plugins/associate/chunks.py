"""The chunks ``post`` sends, read batch by batch: a staged chunk file, or a range of the staged elements.

``build_batches`` hands each ``post`` task either a chunk file of its own (``staged.CHUNK``,
rows in batch order) or, when ``detect_changes`` staged the elements to send in send order
already (``payload.send_order``), a range ``[start, stop)`` of that file, numbered in
batches here as it is read. Either way the batches come in batch order, a row group at a
time, so the first requests leave before the chunk is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from associate import staged
from associate.tables import DEFAULT_SOURCE, METHOD_REGISTER

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# A chunk's columns but its batch number: what a range of staged elements gives.
_CHUNK_ELEMENT_COLUMNS = [column for column in staged.CHUNK.columns if column != "batch_no"]


def chunk_batches(payload_uri: str, rows: Sequence[int] | None = None, batch_size: int | None = None,
                  ) -> tuple[list[int], Iterator[tuple[int, pd.DataFrame]]]:
    """The batch numbers of a chunk, and its batches in batch order, read as they are needed.

    ``rows``: the chunk is rows ``[start, stop)`` of ``payload_uri``, staged elements to
    send in send order, in batches of at most ``batch_size``. Without it ``payload_uri`` is
    a chunk file: rows in batch order (as ``chunking.write_chunks_from`` stages them) are
    read a row group at a time, other files read whole and grouped.
    """
    from associate import staging

    if rows is not None:
        if not batch_size:
            raise ValueError("a chunk given as a range of rows needs its batch_size")
        start, stop = (int(row) for row in rows)
        numbers = range_batch_numbers(payload_uri, start, stop, int(batch_size))
        frames = _numbered(staging.iter_row_range(payload_uri, start, stop, _CHUNK_ELEMENT_COLUMNS), numbers)
        return sorted(set(numbers.tolist())), _in_order(frames, payload_uri)
    numbers = staging.read_columns(payload_uri, ["batch_no"])["batch_no"].to_numpy()
    if bool((numbers[1:] >= numbers[:-1]).all()):
        return sorted(set(numbers.tolist())), _in_order(staging.iter_frames(payload_uri), payload_uri)

    def grouped() -> Iterator[tuple[int, pd.DataFrame]]:
        frame = _with_defaults(staging.read_frame(payload_uri), payload_uri)
        yield from ((int(no), group) for no, group in frame.groupby("batch_no", sort=True))

    return sorted(set(numbers.tolist())), grouped()


def range_batch_numbers(uri: str, start: int, stop: int, batch_size: int) -> np.ndarray:
    """batch_no of each of rows ``[start, stop)`` in send order: a batch is one call of at most ``batch_size``."""
    import numpy as np
    import pandas as pd

    from associate import staging
    from associate.chunking import number_batches

    tables = [table.to_pandas() for table in staging.iter_row_range(uri, start, stop, list(staged.BATCH_KEY))]
    keys = pd.concat(tables, ignore_index=True) if tables else None
    if keys is None or not len(keys):
        return np.zeros(0, dtype=np.int64)
    return number_batches(keys, batch_size).to_numpy()


def _numbered(tables: Iterable, numbers: np.ndarray) -> Iterator[pd.DataFrame]:
    """The range's row groups as frames, each with its rows' batch numbers."""
    offset = 0
    for table in tables:
        frame = table.to_pandas()
        frame.insert(0, "batch_no", numbers[offset:offset + len(frame)])
        offset += len(frame)
        yield frame


def _with_defaults(frame: pd.DataFrame, payload_uri: str) -> pd.DataFrame:
    for column, default in (("method", METHOD_REGISTER), ("source", DEFAULT_SOURCE), ("account_id", None)):
        if column not in frame.columns:  # staged by an earlier version (or bench): registered, as then
            frame[column] = default
    staged.CHUNK.check(frame, payload_uri)
    return frame


def _in_order(frames: Iterable[pd.DataFrame], payload_uri: str) -> Iterator[tuple[int, pd.DataFrame]]:
    """Batches of frames whose rows are in batch order; the last batch of a frame may go on in the next."""
    import numpy as np
    import pandas as pd

    carry = None
    for frame in frames:
        frame = _with_defaults(frame, payload_uri)
        if carry is not None:
            frame = pd.concat([carry, frame], ignore_index=True)
        if not len(frame):
            continue
        nos = frame["batch_no"].to_numpy()
        starts = np.flatnonzero(np.r_[True, nos[1:] != nos[:-1]])
        for start, end in zip(starts[:-1], starts[1:]):
            yield int(nos[start]), frame.iloc[start:end]
        carry = frame.iloc[starts[-1]:]
    if carry is not None and len(carry):
        yield int(carry["batch_no"].iloc[0]), carry
