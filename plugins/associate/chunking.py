"""Send order of staged elements: chunks that keep a company's customers together, and batches.

``payload.write_chunks_from`` stages the chunks these functions lay out.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

# A chunk is a mapped post task: each costs a task start and end (~0.8 s under dags test, a
# process start on a deployment) and ends in partial batches, and one task can send with
# the whole API budget. So chunks fill the capillary_api pool's slots (README: 2) once each
# has CHUNK_MIN_BATCHES batches, and there are more only of CHUNK_FULL_BATCHES each.
# In batches of 100: one chunk below 10k customers, two from 10k, one per 50k from 150k, 8 from 400k.
CHUNK_MIN_BATCHES = 50
CHUNK_FULL_BATCHES = 500
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
    group = frame["company_external_id"].astype(object).where(
        frame["company_external_id"].notna(), "\x00" + frame["entity_key"].astype(str)
    )
    sizes = group.value_counts(sort=False)
    order = sorted(sizes.items(), key=lambda item: (-item[1], str(item[0])))
    heap = [(0, n) for n in range(min(max_chunks, len(order)))]
    chunk_of = {}
    for name, size in order:
        load, n = heapq.heappop(heap)
        chunk_of[name] = n
        heapq.heappush(heap, (load + size, n))
    return group.map(chunk_of).astype("int64")


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
    frame = frame.reset_index(drop=True)
    call = [c for c in ("method", "source", "account_id") if c in frame.columns]
    order = frame[["depth", "company_external_id", "entity_key"]].assign(
        _chunk=assign_chunks(frame, max_chunks).to_numpy(),
        # One sortable number per (method, source, account_id): cheaper to sort than three texts.
        _call=frame.groupby(call, dropna=False, sort=True).ngroup().to_numpy() if call else 0,
    )
    order = order.sort_values(["_chunk", "depth", "_call", "company_external_id", "entity_key"], kind="stable",
                              na_position="last")
    starts = np.flatnonzero(np.diff(order["_chunk"].to_numpy())) + 1
    return np.split(order.index.to_numpy(), starts)
