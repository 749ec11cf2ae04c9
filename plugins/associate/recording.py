"""Recording answered batches in the warehouse on a thread of its own, while the senders go on.

``post`` stages each group of answered batches, then hands it here (``ensure_companies``
hands over its groups of answered companies the same way). One thread writes the
groups, in order, over one warehouse connection (a SQLite connection serves only the
thread that opened it): results, warnings and sync state of every group waiting when a
transaction starts go into that transaction. A warehouse slower than the API thus gets
fewer, larger transactions instead of holding the senders up (SQLite tables of 400,000
rows took 125 ms for 2,000 rows' random index inserts and 470 ms for 10,000), and the
next wave's sends no longer wait for the last wave's recording.

At most ``BACKLOG_BATCHES`` batches wait for their transaction: staging another group
waits until the thread catches up. A task killed with a backlog has staged parts without
their recording: at most the backlog and the group staged while waiting for room, or
what a retry handed over again. A retried task records that many of its last batches
again (rows are replaced by key, in batch order, so that is harmless).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from associate.warehouse import BatchRecorder

log = logging.getLogger(__name__)

# Batches that may wait for their transaction.
BACKLOG_BATCHES = 200
# A wait for room in the backlog at least this long is logged: the warehouse held the sending up.
LOGGED_WAIT_SECONDS = 1.0


def record_outcomes(recorder: BatchRecorder, outcomes: list[pd.DataFrame]) -> None:
    """Write answered batches' results, warnings and sync state to the warehouse (one transaction)."""
    from associate.reconcile import records_from_outcomes

    results, warnings, state = records_from_outcomes(outcomes, recorder.run_id)
    recorder.record(results=results, warnings=warnings, state=state)


class RecordingThread:
    """Records handed-over outcome groups on one thread, in order; a recording that fails stops the sending."""

    def __init__(self, recorder: BatchRecorder, backlog: int = BACKLOG_BATCHES):
        self._recorder, self._backlog = recorder, backlog
        self._waiting: deque[list[pd.DataFrame]] = deque()
        self._unrecorded = 0  # batches handed over and not yet committed (waiting or being written)
        self._closed = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="warehouse-recording", daemon=True)
        self._thread.start()

    def __enter__(self) -> RecordingThread:
        return self

    def __exit__(self, *exc: object) -> None:
        # Everything handed over is staged: it is recorded before the task ends, even when
        # the task is failing (its retry then records less again).
        self.close()

    def wait_for_room(self) -> None:
        """Block while the backlog is full; raise a recording's error.

        Called before a group is staged: staged batches without their recording then stay
        within the backlog and one group (or one retry's re-recording).
        """
        started = time.monotonic()
        with self._changed:
            waiting = self._unrecorded
            while self._error is None and self._unrecorded >= self._backlog:
                self._changed.wait()
            self._raise_error()
        waited = time.monotonic() - started
        if waited >= LOGGED_WAIT_SECONDS:
            log.info("Waited %.1f s for the warehouse: %d answered batches were waiting to be recorded (at most %d "
                     "may wait); no new request went out meanwhile", waited, waiting, self._backlog)

    def put(self, outcomes: list[pd.DataFrame]) -> None:
        """Hand over a group's outcomes, in batch order (blocks while the backlog is full)."""
        self.wait_for_room()
        with self._changed:
            self._waiting.append(outcomes)
            self._unrecorded += len(outcomes)
            self._changed.notify_all()

    def close(self) -> None:
        """Wait until every group handed over is recorded, close the connection; raise a recording's error."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        with self._changed:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._waiting and not self._closed:
                        self._changed.wait()
                    if not self._waiting:
                        return
                    groups = list(self._waiting)
                    self._waiting.clear()
                outcomes = [outcome for group in groups for outcome in group]
                record_outcomes(self._recorder, outcomes)
                with self._changed:
                    self._unrecorded -= len(outcomes)
                    self._changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the sending thread, which raises it
            with self._changed:
                self._error = exc
                self._changed.notify_all()
        finally:
            self._recorder.close()
