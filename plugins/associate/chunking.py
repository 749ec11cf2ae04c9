"""Send order of staged elements: chunks that keep a company's customers together, and batches;
and the chunks ``build_batches`` stages: ranges of the elements to send, or copies.
"""

from __future__ import annotations

import heapq
import json
import logging

import numpy as np
import pandas as pd

from associate import staging
from associate.staged import BATCH_KEY, CHUNK_COLUMNS

log = logging.getLogger(__name__)

# A chunk is a mapped post task: each costs a task start and end (~0.5 s of local work a
# chunk in a 1M run under dags test, a process start on a deployment) and ends in partial
# batches, and one task can send with the whole API budget (the budget, not the pool's
# slots, sets the pace). So chunks fill the capillary_api pool's slots (README: 2) once
# each has CHUNK_MIN_BATCHES batches, and there are more only of CHUNK_FULL_BATCHES each.
# In batches of 100: one chunk below 10k customers, two from 10k, one per 200k from 600k.
CHUNK_MIN_BATCHES = 50
CHUNK_FULL_BATCHES = 2_000
# At most this many chunks (mapped post tasks) a run.
MAX_CHUNKS = 8
API_POOL_SLOTS = 2

# Rows per row group of a staged chunk: post starts sending once the first is read (a
# whole chunk of 125,000 payloads took ~1.5 s to read and split into batches).
CHUNK_ROW_GROUP_ROWS = 5_000


# Footer metadata of staged elements to send built in send order (``FrameWriter.metadata``):
# JSON ``[[start, stop], ...]``, the rows of each chunk.
CHUNK_RANGES_KEY = "associate.chunk_ranges"


def chunk_count(rows: int, batch_size: int, max_chunks: int) -> int:
    """How many chunks (mapped post tasks) ``rows`` customers to send are staged as."""
    # Every chunk ends in partial batches (one per hierarchy depth): split only when each
    # chunk still has plenty of full batches, so small runs do not waste API calls.
    batches = rows // batch_size
    return max(1, min(max_chunks, max(min(API_POOL_SLOTS, batches // CHUNK_MIN_BATCHES),
                                      batches // CHUNK_FULL_BATCHES)))


def assign_chunks(frame: pd.DataFrame, max_chunks: int) -> pd.Series:
    """Chunk number per row: a company's customers stay together; chunks balanced by size."""
    codes, names = pd.factorize(frame["company_external_id"], sort=True)
    return pd.Series(_chunk_of_rows(frame, codes, len(names), max_chunks), index=frame.index, dtype="int64")


def _chunk_of_rows(frame: pd.DataFrame, company_codes: np.ndarray, companies: int, max_chunks: int) -> np.ndarray:
    """``assign_chunks`` from the companies' codes in name order (-1: no company) and how many there are."""
    if max_chunks < 1:
        raise ValueError("max_chunks must be at least 1")
    # Parents are in the same company (validation), so a company keeps whole chains;
    # a customer without a company has no parent link in its payload and stands alone.
    # Groups: companies in name order, then each loner in key order (as "\x00" + key, a
    # loner's group name sorted before every company's). Integer codes, not texts: ~2.5 s
    # of build_batches at 1M rows as text operations.
    codes = company_codes.astype(np.int64, copy=True)
    loners = np.flatnonzero(codes < 0)
    loner_keys = frame["entity_key"].to_numpy()[loners].astype(str)
    codes[loners[np.argsort(loner_keys, kind="stable")]] = companies + np.arange(len(loners))
    sizes = np.bincount(codes, minlength=companies + len(loners))
    # Largest first; ties by group name: loners (named "\x00" + key) before companies.
    group_codes = np.arange(len(sizes))
    name_rank = np.where(group_codes >= companies, group_codes - companies, group_codes + len(loners))
    order = np.lexsort((name_rank, -sizes))
    heap = [(0, n) for n in range(min(max_chunks, len(order)))]
    chunk_of = np.zeros(len(sizes), dtype=np.int64)
    for group in order.tolist():
        load, n = heapq.heappop(heap)
        chunk_of[group] = n
        heapq.heappush(heap, (load + int(sizes[group]), n))
    return chunk_of[codes]


def number_batches(keys: pd.DataFrame | pd.Series, batch_size: int) -> pd.Series:
    """batch_no for rows already sorted by batch key: at most batch_size per batch, one key each.

    ``keys`` holds the batch key columns (``staged.BATCH_KEY``: depth, method, source,
    account_id), or is the depth alone; a batch then is one bulk call.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    frame = keys.to_frame() if isinstance(keys, pd.Series) else keys
    frame = frame.reset_index(drop=True)
    if frame.empty:
        return pd.Series([], dtype="int64")
    # Rows are sorted by key: a new group starts wherever any key column changes
    # (compared as factorized codes; a missing value is code -1, equal to another missing).
    starts = np.zeros(len(frame), dtype=bool)
    starts[0] = True
    for column in frame.columns:
        codes = pd.factorize(frame[column])[0]
        starts[1:] |= codes[1:] != codes[:-1]
    group = pd.Series(np.cumsum(starts) - 1)
    rank = group.groupby(group).cumcount()
    batches = (group.value_counts().sort_index() + batch_size - 1) // batch_size
    offset = batches.cumsum() - batches
    return (group.map(offset) + rank // batch_size).astype("int64")


def chunk_order(frame: pd.DataFrame, max_chunks: int) -> list[np.ndarray]:
    """Row positions of each chunk, in send order (depth, method, source, account, then company, then key)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    frame = frame.reset_index(drop=True)
    # One factorization of the companies for both the chunks and the order (each ~0.25 s at 1M).
    company_codes, names = pd.factorize(frame["company_external_id"], sort=True)
    chunk = _chunk_of_rows(frame, company_codes, len(names), max_chunks)
    # Every sort key as a number in the texts' order (missing last), then one numeric sort:
    # Arrow's multi-key sort over the company and key texts took 1.6 s at 1M rows, this 0.9 s.
    call = np.zeros(len(frame), np.int64)  # one number per (method, source, account_id)
    for column in ("method", "source", "account_id"):
        if column in frame.columns:
            codes, count = _sorted_codes(frame[column])
            call = call * count + codes
    depth, _ = _sorted_codes(frame["depth"])
    company = company_codes.astype(np.int64, copy=True)
    company[company < 0] = len(names)  # missing last, as _sorted_codes
    key_rank = np.empty(len(frame), np.int64)
    key_rank[pc.sort_indices(pa.array(frame["entity_key"].astype(str), type=pa.string())).to_numpy()] = np.arange(
        len(frame))
    positions = np.lexsort((key_rank, company, call, depth, chunk))
    starts = np.flatnonzero(np.diff(chunk[positions])) + 1
    return np.split(positions, starts)


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes in the values' sort order, a missing value after all others; and how many codes there are."""
    codes, uniques = pd.factorize(values, sort=True)
    codes = codes.astype(np.int64, copy=True)
    codes[codes < 0] = len(uniques)
    return codes, len(uniques) + 1


def stage_chunks(uri: str, *, run_id: str, batch_size: int, max_chunks: int) -> list[tuple[str, list[int] | None]]:
    """Lay out the staged elements to send as at most ``max_chunks`` chunks: ``(payload_uri, rows)`` each.

    Elements staged in send order with their ranges recorded (``CHUNK_RANGES_KEY``) give
    ranges of ``uri`` (``rows`` = ``[start, stop)``; ``associate.chunks`` numbers their
    batches as ``post`` reads them), as do elements whose send order turns out to be their
    file order; otherwise each chunk is copied to a file of its own (``rows`` None).
    """
    ranges = _recorded_ranges(uri, max_chunks)
    if ranges is None:
        keys = staging.read_columns(uri, ["entity_key", "company_external_id", *BATCH_KEY])
        if keys.empty:
            return []
        chunks = chunk_order(keys, max_chunks)
        ranges = _contiguous_ranges(chunks)
        if ranges is None:
            return [(chunk_uri, None) for chunk_uri in _write_chunks(uri, keys, chunks, run_id=run_id,
                                                                     batch_size=batch_size)]
    log.info("Staged %d element(s) in %d chunk(s) of batches of at most %d: ranges of %s, in send order",
             ranges[-1][1], len(ranges), batch_size, uri)
    return [(uri, rows) for rows in ranges]


def _recorded_ranges(uri: str, max_chunks: int) -> list[list[int]] | None:
    """The chunk ranges ``detect_changes`` recorded in the file, when they are ``max_chunks`` and cover it."""
    found = staging.footer(uri)
    recorded = found.metadata.get(CHUNK_RANGES_KEY)
    if not recorded:
        return None
    ranges = [[int(start), int(stop)] for start, stop in json.loads(recorded)]
    bounds = [start for start, _ in ranges] + [ranges[-1][1]] if ranges else []
    if (len(ranges) != max_chunks or bounds[0] != 0 or bounds[-1] != found.rows
            or any(stop != start for (_, stop), (start, _) in zip(ranges, ranges[1:]))):
        return None
    # Parents before children in each chunk, checked where it is cheap: the rest of the
    # order (calls, companies) follows from how it was built.
    depth = staging.read_columns(uri, ["depth"])["depth"].to_numpy()
    if any((np.diff(depth[start:stop]) < 0).any() for start, stop in ranges):
        return None
    return ranges


def _contiguous_ranges(chunks: list[np.ndarray]) -> list[list[int]] | None:
    """``[start, stop)`` of each chunk when its rows are consecutive and ascending; None otherwise."""
    ranges = []
    for rows in chunks:
        start = int(rows[0])
        if not np.array_equal(rows, np.arange(start, start + len(rows))):
            return None
        ranges.append([start, start + len(rows)])
    return ranges


def write_chunks_from(uri: str, *, run_id: str, batch_size: int, max_chunks: int) -> list[str]:
    """Stage the staged elements to send as at most ``max_chunks`` payload chunk files; return their URIs."""
    keys = staging.read_columns(uri, ["entity_key", "company_external_id", *BATCH_KEY])
    if keys.empty:
        return []
    return _write_chunks(uri, keys, chunk_order(keys, max_chunks), run_id=run_id, batch_size=batch_size)


def _write_chunks(uri: str, keys: pd.DataFrame, chunks: list[np.ndarray], *, run_id: str, batch_size: int) -> list[str]:
    """Copy each chunk's rows of ``uri`` (``chunks``: positions in send order) to a chunk file, batches numbered.

    The payloads are read once, row group by row group: only the key columns are loaded whole; each row is routed to its chunk as its row
    group is read, so memory holds the payloads once, never a second copy of them all.
    """
    import pyarrow as pa

    chunk_of = np.empty(len(keys), dtype=np.int64)
    for n, rows in enumerate(chunks):
        chunk_of[rows] = n
    parts: list[list] = [[] for _ in chunks]
    offset = 0
    for table in staging.iter_tables(uri):
        table = table.select([c for c in CHUNK_COLUMNS if c != "batch_no"])
        ids = chunk_of[offset:offset + table.num_rows]
        for n in np.unique(ids):
            parts[n].append(table.filter(pa.array(ids == n)))
        offset += table.num_rows
    uris = []
    for n, rows in enumerate(chunks):
        # Routed rows are in file order; send order is their rank among the chunk's rows.
        local = np.searchsorted(np.sort(rows), rows)
        table = pa.concat_tables(parts[n]).take(pa.array(local))
        parts[n] = []
        table = table.add_column(0, "batch_no", pa.array(
            number_batches(keys.iloc[rows][list(BATCH_KEY)], batch_size).to_numpy(), type=pa.int64()))
        uris.append(staging.write_table(table.select(list(CHUNK_COLUMNS)),
                                        staging.run_path(run_id, "payloads", f"chunk-{n:04d}.parquet"),
                                        row_group_size=CHUNK_ROW_GROUP_ROWS))
        log.info("Staged chunk %d of %d: %d element(s)", n + 1, len(chunks), table.num_rows)
    log.info("Staged %d element(s) in %d chunk(s) of batches of at most %d", len(keys), len(uris), batch_size)
    return uris
