"""The task process's heap: which objects its garbage collections visit, and memory handed back.

A task process holds Airflow's, GX's and pandas' objects from its imports (about 850,000
under ``airflow dags test``). Each full collection visits all of them: ~0.5 s, every few
seconds of a loop that makes frames, 7 of a 100k post's 73 s. Objects that exist before
the loop live until the task ends: freezing them keeps them out of its collections.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_frozen_depth = 0


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """Keep the objects that exist now out of the block's garbage collections (nested blocks: the outermost thaws)."""
    global _frozen_depth
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if not _frozen_depth:
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
