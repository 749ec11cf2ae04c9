"""Which batches of a chunk travel side by side (``sending._WaveSplitter``), which are recorded together, and the call a batch is."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from collections import deque

from associate.sending import _answered_groups, _WaveSplitter, batch_call


def ref(mobile: str) -> dict:
    return {"profiles": [{"identifiers": [{"type": "mobile", "value": mobile}]}]}


def element(mobile: str, parent: str | None = None) -> str:
    body = {"profiles": [{"identifiers": [{"type": "mobile", "value": mobile}]}]}
    if parent:
        body["associationDetails"] = {"roleCode": "FC", "parentCustomer": ref(parent)}
    return json.dumps(body)


def waves(*batches: list[str]) -> list[list[int]]:
    splitter, found = _WaveSplitter(), []
    for no, payloads in enumerate(batches):
        if splitter.starts_wave(pd.DataFrame({"payload": payloads})):
            found.append([])
        found[-1].append(no)
    return found


def test_children_of_one_parent_split_over_batches_travel_side_by_side():
    parents = [element("p1"), element("p2")]
    # Siblings of p1 fill two batches: both only name p1, answered in the wave before.
    assert waves(parents, [element("c1", "p1"), element("c2", "p1")], [element("c3", "p1"), element("c4", "p2")]) == [
        [0], [1, 2]]


def test_a_child_waits_for_the_batch_that_registers_its_parent():
    assert waves([element("p1")], [element("other")], [element("c1", "p1")]) == [[0, 1], [2]]
    # A grandchild waits for its parent's batch, a depth below.
    assert waves([element("p1")], [element("c1", "p1")], [element("g1", "c1")]) == [[0], [1], [2]]


def test_two_batches_never_race_to_register_the_same_customer():
    assert waves([element("a")], [element("b")], [element("a")]) == [[0, 1], [2]]


def answered(futures, most, linger=0.0):
    return [[no for no, _, _ in group] for group in _answered_groups(deque(futures), most, linger)]


def done(no, value="ok"):
    from concurrent.futures import Future

    future = Future()
    future.set_result(value)
    return (no, None, future)


def test_batches_answered_ahead_are_taken_together_up_to_a_limit():
    # Every answer is in: groups of at most three, in batch order.
    assert answered([done(n) for n in range(7)], 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert answered([], 3) == []


def test_a_group_stops_at_a_batch_not_answered_within_the_linger():
    from concurrent.futures import Future

    later = Future()
    in_flight = deque([done(0), done(1), (2, None, later), done(3)])
    # Batch 2 is not answered within the linger after batch 0: it starts the next group.
    groups = _answered_groups(in_flight, 10, 0.05)
    assert [no for no, _, _ in next(groups)] == [0, 1]
    later.set_result("late")
    assert [no for no, _, _ in next(groups)] == [2, 3]
    assert not in_flight


def test_a_group_waits_for_answers_that_come_within_the_linger():
    import threading
    from concurrent.futures import Future

    later = Future()
    threading.Timer(0.05, later.set_result, ("soon",)).start()
    # Answered 50 ms after batch 0, within its 10 s linger: one group, taken when it is in.
    assert answered([done(0), (1, None, later), done(2)], 10, linger=10.0) == [[0, 1, 2]]


def test_a_failed_send_raises_after_the_answers_before_it_are_taken():
    from concurrent.futures import Future

    broken = Future()
    broken.set_exception(RuntimeError("no retry can fix this"))
    groups = _answered_groups(deque([done(0), done(1), (2, None, broken), done(3)]), 10, 10.0)
    assert [no for no, _, _ in next(groups)] == [0, 1]
    with pytest.raises(RuntimeError, match="no retry can fix this"):
        next(groups)


def test_a_batch_is_one_call_and_a_batch_mixing_calls_is_refused():
    batch = pd.DataFrame({"batch_no": [4, 4], "method": ["PUT", "PUT"], "source": ["WECHAT", None],
                          "account_id": [None, float("nan")]})
    assert batch_call(batch) == (True, "WECHAT", None)
    assert batch_call(batch.drop(columns=["method", "source"])) == (False, "INSTORE", None)
    with pytest.raises(ValueError, match=r"batch 4 mixes account_id values \['a1', 'a2'\]"):
        batch_call(batch.assign(account_id=["a1", "a2"]))


def test_a_retry_finds_each_batch_in_the_parts_an_earlier_try_staged(tmp_path):
    from associate import staging
    from associate.sending import part_uri, staged_parts

    outcome_uri = "file://" + str(tmp_path / "outcomes" / "chunk-0000.parquet")
    assert staged_parts(outcome_uri) == {}  # a first try: nothing staged
    # A group of batches 5 and 6; a part of an older version (one batch, no batch_no column);
    # a writer killed mid-file.
    staging.write_frame(pd.DataFrame({"entity_key": ["a", "b", "c"], "batch_no": [5, 5, 6]}), part_uri(outcome_uri, 5))
    staging.write_frame(pd.DataFrame({"entity_key": ["z"]}), part_uri(outcome_uri, 4))
    (tmp_path / "outcomes" / "chunk-0000.parquet.parts" / "batch-00007.parquet.partial").write_bytes(b"PAR1")

    parts = staged_parts(outcome_uri)
    assert sorted(parts) == [4, 5, 6]
    assert {no: list(frame["entity_key"]) for no, frame in parts.items()} == {4: ["z"], 5: ["a", "b"], 6: ["c"]}
    assert "batch_no" not in parts[5].columns
