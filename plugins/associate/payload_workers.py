"""Forked worker processes that build payload slices (``payload.iter_elements``).

The workers are forked after the builder is set here, so they inherit the customers
frame and everything derived from it: only slice start rows go to them, and built
slices come back. Where forking is not possible (no fork start method, or a daemonic
process, which may not have children), ``fork_pool`` returns None and the caller builds
in its own process.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator

import pandas as pd

from associate import config, heap

log = logging.getLogger(__name__)

MAX_DEFAULT_PROCESSES = 4


def build_processes(requested: int | None = None) -> int:
    """How many processes build payloads: ``requested``, else the environment, else the usable CPUs (at most 4)."""
    if requested is None:
        requested = config.payload_processes()
    if requested is None:
        requested = min(len(os.sched_getaffinity(0)), MAX_DEFAULT_PROCESSES)
    return max(1, requested)


_worker_builder: Callable[[int], pd.DataFrame] | None = None


def fork_pool(build: Callable[[int], pd.DataFrame], workers: int):
    """A pool of forked workers that inherit ``build`` (nothing large is pickled); None where forking is not possible."""
    import multiprocessing

    global _worker_builder
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    _worker_builder = build
    heap.release_free_memory()
    # Objects the workers inherit stay out of their garbage collections: a collection
    # writes to every tracked object it visits, and each page written is a page copied.
    with heap.frozen():
        try:
            return multiprocessing.get_context("fork").Pool(workers, initializer=_default_signals)
        except (AssertionError, OSError) as exc:
            # A daemonic multiprocessing process may not have children: build here.
            log.info("Building payloads in this process (no worker processes: %s)", exc)
            forget_worker_builder()
            return None


def _default_signals() -> None:
    # A worker inherits the task runner's SIGTERM handler, which ignores the signal in any
    # process but the task's own: Pool.terminate() would then wait forever for the worker.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def forget_worker_builder() -> None:
    """Drop the builder the workers inherited (after the pool has closed)."""
    global _worker_builder
    _worker_builder = None


def _build_in_worker(start: int) -> tuple[pd.DataFrame, list]:
    frame = _worker_builder(start)
    # attrs do not survive pickling in every pandas version: the skipped rows travel beside the frame.
    return frame, frame.attrs.pop("skipped")


def _unpack(result: tuple[pd.DataFrame, list]) -> pd.DataFrame:
    frame, skipped = result
    frame.attrs["skipped"] = skipped
    return frame


def pooled_slices(pool, starts: list[int], workers: int) -> Iterator[pd.DataFrame]:
    """Slices from the pool in row order.

    A bounded window of slices is in flight: workers stay busy while this process compares
    and stages, and finished slices never pile up in memory.
    """
    pending: deque = deque()
    for start in starts:
        pending.append(pool.apply_async(_build_in_worker, (start,)))
        if len(pending) > workers:
            yield _unpack(pending.popleft().get())
    while pending:
        yield _unpack(pending.popleft().get())
