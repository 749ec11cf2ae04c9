"""associate.heap: objects frozen out of the garbage collector's visits for a block, and thawed after it."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from associate import heap

PLUGINS = Path(heap.__file__).resolve().parents[1]


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


def test_the_exit_leaves_the_heap_to_the_system_instead_of_collecting_it(tmp_path):
    # A handler registered before runs after ours: it sees every object frozen, so the
    # interpreter's finalisation does not walk them (the ~2 s exit of a dags test process).
    script = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
        "from associate import heap\n"
        "before = atexit._ncallbacks()\n"
        "heap.skip_collection_at_exit(); heap.skip_collection_at_exit()\n"
        "print('registered:', atexit._ncallbacks() - before)\n"
        "print('frozen now:', gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(PLUGINS)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["registered: 1", "frozen now: False", "frozen at exit: True"]
