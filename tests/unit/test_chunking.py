"""How many mapped post tasks a send is staged as (``chunking.chunk_count``)."""

from __future__ import annotations

import pytest

from associate.chunking import chunk_count


@pytest.mark.parametrize(("customers", "chunks"), [
    (0, 1), (4_999, 1),            # fewer than 50 batches: one task, no partial batches added
    (5_000, 1), (9_999, 1),
    (10_000, 2), (149_999, 2),     # the API pool's two slots, each a task with 50+ batches
    (150_000, 3), (250_000, 5),    # beyond that, a task per 500 batches
    (400_000, 8), (1_000_000, 8),  # at most max_chunks
])
def test_chunks_fill_the_api_pool_then_grow_by_500_batches(customers, chunks):
    assert chunk_count(customers, 100, 8) == chunks


def test_smaller_batches_mean_more_of_them_per_chunk_and_max_chunks_caps():
    assert chunk_count(10_000, 2, 8) == 8  # 5,000 batches of 2
    assert chunk_count(10_000, 2, 3) == 3
    assert chunk_count(1_000_000, 100, 1) == 1
