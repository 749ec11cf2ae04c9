"""How many mapped post tasks a send is staged as (``chunking.chunk_count``), and their send order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from associate.chunking import assign_chunks, chunk_count, chunk_order


@pytest.mark.parametrize(("customers", "chunks"), [
    (0, 1), (4_999, 1),            # fewer than 50 batches: one task, no partial batches added
    (5_000, 1), (9_999, 1),
    (10_000, 2), (149_999, 2),     # the API pool's two slots, each a task with 50+ batches
    (150_000, 2), (599_999, 2),
    (600_000, 3), (1_000_000, 5),  # beyond that, a task per 2,000 batches
    (1_600_000, 8), (5_000_000, 8),  # at most max_chunks
])
def test_chunks_fill_the_api_pool_then_grow_by_2000_batches(customers, chunks):
    assert chunk_count(customers, 100, 8) == chunks


def test_smaller_batches_mean_more_of_them_per_chunk_and_max_chunks_caps():
    assert chunk_count(10_000, 2, 8) == 2  # 5,000 batches of 2
    assert chunk_count(40_000, 2, 8) == 8  # 20,000 batches of 2
    assert chunk_count(40_000, 2, 3) == 3
    assert chunk_count(1_000_000, 100, 1) == 1


def _pandas_chunk_order(frame, max_chunks):
    """The send order as one pandas sort (what chunk_order computed until 2026-12-03)."""
    order = frame[["depth", "company_external_id", "entity_key"]].assign(
        _chunk=assign_chunks(frame, max_chunks).to_numpy(),
        _call=frame.groupby(["method", "source", "account_id"], dropna=False, sort=True).ngroup().to_numpy(),
    ).sort_values(["_chunk", "depth", "_call", "company_external_id", "entity_key"], kind="stable",
                  na_position="last")
    starts = np.flatnonzero(np.diff(order["_chunk"].to_numpy())) + 1
    return np.split(order.index.to_numpy(), starts)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunk_order_is_the_send_order_of_depth_call_company_and_key(seed):
    rng = np.random.default_rng(seed)
    n = 5_000
    companies = pd.Series([f"CO{i}" for i in rng.integers(0, 300, n)], dtype=object)
    companies[rng.random(n) < 0.05] = None  # customers without a company stand alone
    frame = pd.DataFrame({
        "entity_key": [f"K{i:05d}" for i in rng.permutation(n)],
        "company_external_id": companies,
        "depth": rng.integers(0, 4, n),
        "method": rng.choice(["POST", "PUT"], n),
        "source": rng.choice(["INSTORE", "WECHAT"], n),
        "account_id": pd.Series(rng.choice(["", "acc1", None], n), dtype=object),
    })
    frame = frame.sample(frac=1, random_state=seed).reset_index(drop=True)
    got = chunk_order(frame, 4)
    want = _pandas_chunk_order(frame, 4)
    assert len(got) == len(want) == 4
    for mine, theirs in zip(got, want):
        assert np.array_equal(mine, theirs)


def _text_assign_chunks(frame, max_chunks):
    """Chunks per company as text groups (what assign_chunks computed until 2026-12-03)."""
    import heapq

    group = frame["company_external_id"].astype(object).where(
        frame["company_external_id"].notna(), "\x00" + frame["entity_key"].astype(str))
    order = sorted(group.value_counts(sort=False).items(), key=lambda item: (-item[1], str(item[0])))
    heap, chunk_of = [(0, n) for n in range(min(max_chunks, len(order)))], {}
    for name, size in order:
        load, n = heapq.heappop(heap)
        chunk_of[name] = n
        heapq.heappush(heap, (load + size, n))
    return group.map(chunk_of).astype("int64")


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_chunks_keep_companies_together_balanced_largest_first(seed):
    rng = np.random.default_rng(seed)
    n = 3_000
    companies = pd.Series([f"CO{i}" for i in rng.zipf(1.5, n) % 400], dtype=object)
    companies[rng.random(n) < 0.1] = None
    frame = pd.DataFrame({"entity_key": [f"K{i:05d}" for i in rng.permutation(n)], "company_external_id": companies})
    got = assign_chunks(frame, 5)
    assert got.equals(_text_assign_chunks(frame, 5))
    assert got.groupby(frame["company_external_id"]).nunique().max() == 1
    assert assign_chunks(frame.iloc[:0], 5).empty
