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


def answered(futures, most, wait=True):
    return [[no for no, _, _ in group] for group in _answered_groups(deque(futures), most, wait=wait)]


def done(no, value="ok"):
    from concurrent.futures import Future

    future = Future()
    future.set_result(value)
    return (no, None, future)


def test_batches_answered_ahead_are_taken_together_up_to_a_limit():
    # Every answer is in: groups of at most three, in batch order.
    assert answered([done(n) for n in range(7)], 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_group_stops_at_a_batch_still_in_flight():
    from concurrent.futures import Future

    later = Future()
    in_flight = deque([done(0), done(1), (2, None, later), done(3)])
    # Batch 2 is not answered when batches 0 and 1 are taken: it starts the next group.
    groups = _answered_groups(in_flight, 10, wait=True)
    assert [no for no, _, _ in next(groups)] == [0, 1]
    later.set_result("late")
    assert [no for no, _, _ in next(groups)] == [2, 3]
    assert not in_flight


def test_without_waiting_only_the_answered_front_is_taken():
    from concurrent.futures import Future

    later = Future()
    in_flight = deque([done(0), (1, None, later), done(2)])
    assert [[no for no, _, _ in g] for g in _answered_groups(in_flight, 10, wait=False)] == [[0]]
    assert [no for no, _, _ in in_flight] == [1, 2]  # still in flight, in order
    assert answered([], 10, wait=False) == []


def test_a_failed_send_raises_after_the_answers_before_it_are_taken():
    from concurrent.futures import Future

    broken = Future()
    broken.set_exception(RuntimeError("no retry can fix this"))
    groups = _answered_groups(deque([done(0), done(1), (2, None, broken), done(3)]), 10, wait=True)
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
