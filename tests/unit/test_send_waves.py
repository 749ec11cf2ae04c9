"""Which batches of a chunk travel side by side (``sending._independent_waves``)."""

from __future__ import annotations

import json

import pandas as pd

from associate.sending import _independent_waves


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
