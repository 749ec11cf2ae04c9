"""associate.chunks: a chunk's batches in batch order, from a chunk file or a range of the staged elements."""

from __future__ import annotations

import pytest

def chunk_table(batch_nos: list[int]):
    import pyarrow as pa

    return pa.table({"batch_no": pa.array(batch_nos, type=pa.int64()),
                     "entity_key": [f"k{i}" for i in range(len(batch_nos))],
                     "payload": ["{}"] * len(batch_nos), "payload_hash": ["h"] * len(batch_nos),
                     "method": ["POST"] * len(batch_nos), "source": ["INSTORE"] * len(batch_nos),
                     "account_id": pa.array([None] * len(batch_nos), type=pa.string())})


def test_a_chunk_is_read_a_row_group_at_a_time_and_a_batch_spans_row_groups(tmp_path):
    from associate import staging
    from associate.chunks import chunk_batches

    # Row groups of 3 rows: batch 1 starts in the first and ends in the third.
    uri = staging.write_table(chunk_table([0, 0, 1, 1, 1, 1, 1, 2]), "file://" + str(tmp_path / "chunk.parquet"),
                              row_group_size=3)
    batch_nos, batches = chunk_batches(uri)
    assert batch_nos == [0, 1, 2]
    first = next(batches)  # before the rest of the chunk is read
    assert first[0] == 0 and list(first[1]["entity_key"]) == ["k0", "k1"]
    assert [(no, list(group["entity_key"])) for no, group in batches] == [
        (1, ["k2", "k3", "k4", "k5", "k6"]), (2, ["k7"])]


def test_a_chunk_out_of_batch_order_is_grouped_whole(tmp_path):
    from associate import staging
    from associate.chunks import chunk_batches

    uri = staging.write_table(chunk_table([1, 0, 1]).drop_columns(["method", "source", "account_id"]),
                              "file://" + str(tmp_path / "chunk.parquet"), row_group_size=1)
    batch_nos, batches = chunk_batches(uri)
    found = [(no, list(group["entity_key"]), set(group["method"])) for no, group in batches]
    # An older chunk without the call columns is registered, as it was then.
    assert batch_nos == [0, 1] and found == [(0, ["k1"], {"POST"}), (1, ["k0", "k2"], {"POST"})]


def test_a_range_of_staged_elements_is_numbered_in_batches_and_read_a_row_group_at_a_time(tmp_path):
    import pyarrow as pa

    from associate import staging
    from associate.chunks import chunk_batches

    # Rows 2..8 of a file in row groups of 3: the range starts and ends inside a group.
    table = chunk_table([0] * 10).drop_columns(["batch_no"])
    table = table.set_column(table.column_names.index("method"), "method",
                             pa.array(["POST"] * 6 + ["PUT"] * 4)).append_column("depth", pa.array([0] * 10))
    uri = staging.write_table(table, "file://" + str(tmp_path / "to_send.parquet"), row_group_size=3)
    batch_nos, batches = chunk_batches(uri, [2, 9], 3)
    # Batches of at most 3 of one method: k2-k4, k5 (the last POST), k6-k8 (PUT).
    assert batch_nos == [0, 1, 2]
    assert [(no, list(batch["entity_key"]), set(batch["method"])) for no, batch in batches] == [
        (0, ["k2", "k3", "k4"], {"POST"}), (1, ["k5"], {"POST"}), (2, ["k6", "k7", "k8"], {"PUT"})]
    with pytest.raises(ValueError, match="batch_size"):
        chunk_batches(uri, [2, 9])
