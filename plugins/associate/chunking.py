"""Send order of staged elements: chunks that keep a company's customers together, and batches.

``payload.write_chunks_from`` stages the chunks these functions lay out.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

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


def chunk_count(rows: int, batch_size: int, max_chunks: int) -> int:
    """How many chunks (mapped post tasks) ``rows`` customers to send are staged as."""
    # Every chunk ends in partial batches (one per hierarchy depth): split only when each
    # chunk still has plenty of full batches, so small runs do not waste API calls.
    batches = rows // batch_size
    return max(1, min(max_chunks, max(min(API_POOL_SLOTS, batches // CHUNK_MIN_BATCHES),
                                      batches // CHUNK_FULL_BATCHES)))


def assign_chunks(frame: pd.DataFrame, max_chunks: int) -> pd.Series:
    """Chunk number per row: a company's customers stay together; chunks balanced by size."""
    if max_chunks < 1:
        raise ValueError("max_chunks must be at least 1")
    # Parents are in the same company (validation), so a company keeps whole chains;
    # a customer without a company has no parent link in its payload and stands alone.
    # Groups: companies in name order, then each loner in key order (as "\x00" + key, a
    # loner's group name sorted before every company's). Integer codes, not texts: ~2.5 s
    # of build_batches at 1M rows as text operations.
    codes, names = pd.factorize(frame["company_external_id"], sort=True)
    codes = codes.astype(np.int64, copy=False)
    loners = np.flatnonzero(codes < 0)
    companies = len(names)
    loner_keys = frame["entity_key"].astype(str).to_numpy()[loners]
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
    return pd.Series(chunk_of[codes], index=frame.index, dtype="int64")


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
    chunk = assign_chunks(frame, max_chunks).to_numpy()
    # Every sort key as a number in the texts' order (missing last), then one numeric sort:
    # Arrow's multi-key sort over the company and key texts took 1.6 s at 1M rows, this 0.9 s.
    call = np.zeros(len(frame), np.int64)  # one number per (method, source, account_id)
    for column in ("method", "source", "account_id"):
        if column in frame.columns:
            codes, count = _sorted_codes(frame[column])
            call = call * count + codes
    depth, _ = _sorted_codes(frame["depth"])
    company, _ = _sorted_codes(frame["company_external_id"])
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
