"""associate.payload_workers: forked workers that end when told, under Airflow's task runner too."""

from __future__ import annotations

import os
import signal

import pytest

from associate import payload_workers


@pytest.fixture
def task_runner_sigterm():
    """Airflow's task runner handler: SIGTERM does nothing in any process but the task's own."""
    task_pid = os.getpid()

    def on_term(signum, frame):
        if os.getpid() != task_pid:
            return

    previous = signal.signal(signal.SIGTERM, on_term)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_workers_take_sigterm_by_default_so_terminate_ends_them(task_runner_sigterm):
    pool = payload_workers.fork_pool(lambda start: None, 2)
    assert pool is not None
    try:
        assert pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
        workers = list(pool._pool)
    finally:
        pool.terminate()  # waited forever on a worker that kept the task runner's handler
        payload_workers.forget_worker_builder()
    assert all(worker.exitcode is not None for worker in workers)
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # this process keeps its own
