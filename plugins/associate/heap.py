"""The task process's heap: which objects its garbage collections visit, and memory handed back.

A task process holds Airflow's, GX's and pandas' objects from its imports (about 850,000
under ``airflow dags test``). Each full collection visits all of them: ~0.5 s, every few
seconds of a loop that makes frames, 7 of a 100k post's 73 s. Objects that exist before
the loop live until the task ends: freezing them keeps them out of its collections.
The same objects make the interpreter's exit slow; ``skip_collection_at_exit`` leaves them
to the system.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
from collections.abc import Iterator

_frozen_depth = 0
_exit_collection_skipped = False


def skip_collection_at_exit() -> None:
    """At interpreter exit, leave the objects alive then to the system instead of collecting their cycles."""
    global _exit_collection_skipped
    if _exit_collection_skipped:
        return
    # Python's finalisation runs the cyclic collector over every live object, again and again
    # as it tears the modules down: ~2 s of every `airflow dags test` process's exit once GX
    # is imported (task processes on a deployment end with os._exit and never pay it).
    # Frozen objects are still freed by reference counting; only their cycles go with the
    # process, as memory the system reclaims anyway. Registered last, it runs first.
    atexit.register(gc.freeze)
    _exit_collection_skipped = True


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """Keep the objects that exist now out of the block's garbage collections (nested blocks: the outermost thaws)."""
    global _frozen_depth
    skip_collection_at_exit()
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if not _frozen_depth:
            # The block's own cyclic garbage goes first, while the objects from before are
            # still out of the collection: left for later, a 1M run's ensure_companies left
            # ~325,000 objects that the next task's full collection visited with the rest
            # (0.98 s against 0.45 s in the dry run's detect_changes).
            gc.collect()
            # Back to the oldest generation: cycles among them are collected again.
            gc.unfreeze()


def release_free_memory() -> None:
    """Hand memory freed by earlier work back to the system (glibc and Arrow keep it)."""
    import ctypes
    import ctypes.util

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:  # glibc only
        trim(0)
