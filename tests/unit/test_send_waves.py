"""Which batches of a chunk travel side by side (``sending._independent_waves``), and which are recorded together."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from associate.sending import _answered_groups, _independent_waves


def ref(mobile: str) -> dict:
    return {"profiles": [{"identifiers": [{"type": "mobile", "value": mobile}]}]}


def element(mobile: str, parent: str | None = None) -> str:
    body = {"profiles": [{"identifiers": [{"type": "mobile", "value": mobile}]}]}
    if parent:
        body["associationDetails"] = {"roleCode": "FC", "parentCustomer": ref(parent)}
    return json.dumps(body)


def waves(*batches: list[str]) -> list[list[int]]:
    numbered = [(no, pd.DataFrame({"payload": payloads})) for no, payloads in enumerate(batches)]
    return [[no for no, _ in wave] for wave in _independent_waves(numbered)]


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


def answered(futures, most):
    return [[no for no, _, _ in group] for group in _answered_groups(futures, most)]


def done(no, value="ok"):
    from concurrent.futures import Future

    future = Future()
    future.set_result(value)
    return (no, None, future)


def test_batches_answered_ahead_are_recorded_together_up_to_a_limit():
    # Every answer is in: groups of at most three, in batch order.
    assert answered([done(n) for n in range(7)], 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_group_stops_at_a_batch_still_in_flight():
    from concurrent.futures import Future

    later = Future()
    groups = _answered_groups([done(0), done(1), (2, None, later), done(3)], 10)
    # Batch 2 is not answered when batches 0 and 1 are taken: it starts the next group.
    assert [no for no, _, _ in next(groups)] == [0, 1]
    later.set_result("late")
    assert [no for no, _, _ in next(groups)] == [2, 3]


def test_a_failed_send_raises_after_the_answers_before_it_are_given():
    from concurrent.futures import Future

    broken = Future()
    broken.set_exception(RuntimeError("no retry can fix this"))
    groups = _answered_groups([done(0), done(1), (2, None, broken), done(3)], 10)
    assert [no for no, _, _ in next(groups)] == [0, 1]
    with pytest.raises(RuntimeError, match="no retry can fix this"):
        next(groups)

