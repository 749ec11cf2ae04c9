"""associate.heap: objects frozen out of the garbage collector's visits for a block, and thawed after it."""

from __future__ import annotations

import gc

from associate import heap


def test_a_block_freezes_what_exists_and_the_outermost_block_thaws_it():
    assert gc.get_freeze_count() == 0
    with heap.frozen():
        outer = gc.get_freeze_count()
        assert outer > 0
        with heap.frozen():  # e.g. payload workers forked inside a frozen task
            pass
        assert gc.get_freeze_count() >= outer  # the inner block did not thaw the outer one's objects
    assert gc.get_freeze_count() == 0


def test_cycles_made_inside_the_block_are_still_collected():
    class Node:
        pass

    with heap.frozen():
        node = Node()
        node.self = node
        del node
        assert gc.collect() >= 1
