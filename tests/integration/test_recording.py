"""``associate.recording``: groups recorded on a thread of their own, in order, with a bounded backlog."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from associate import staged, tables, warehouse
from associate.recording import RecordingThread

CONN_FIXTURES = {"sqlite": "sqlite_conn", "postgres": "pg_conn"}


@pytest.fixture(params=list(CONN_FIXTURES))
def conn_id(request):
    conn_id = request.getfixturevalue(CONN_FIXTURES[request.param])
    warehouse.ensure_output_tables(conn_id)
    return conn_id


def outcome(key: str, status: str = "success", capillary_id: int | None = 1) -> pd.DataFrame:
    return staged.outcome_frame([staged.outcome_record(
        "customer", key, status, capillary_id=capillary_id, attempts=1, payload_hash=f"h-{key}",
        synced_at=pd.Timestamp("2026-12-04T00:00:00Z"), error_message="refused" if status == "failed" else None)])


class CountingRecorder(warehouse.BatchRecorder):
    """A real recorder that counts its transactions and, once ``hold`` is cleared, waits before each."""

    def __init__(self, conn_id: str, run_id: str):
        super().__init__(conn_id, run_id)
        self.transactions: list[int] = []
        self.go, self.entered = threading.Event(), threading.Event()
        self.go.set()
        self.threads: set[str] = set()

    def record(self, *, results, warnings, state) -> None:
        self.entered.set()
        self.go.wait(timeout=30)
        self.threads.add(threading.current_thread().name)
        self.transactions.append(len(results))
        super().record(results=results, warnings=warnings, state=state)


def test_groups_are_recorded_in_order_on_one_thread_and_the_last_answer_wins(conn_id):
    recorder = CountingRecorder(conn_id, "run-rec")
    with RecordingThread(recorder) as recording:
        recording.put([outcome("a", "failed", None), outcome("b")])
        recording.put([outcome("a", capillary_id=7)])  # sent again later in the chunk: succeeded
    state = warehouse.read_sync_state(conn_id, "customer").set_index("entity_key")
    assert state.loc["a", "last_status"] == "success" and state.loc["a", "capillary_id"] == 7
    results = warehouse.read_table(conn_id, tables.RESULTS_TABLE, "run-rec").set_index("entity_key")
    assert sorted(results.index) == ["a", "b"] and results.loc["a", "status"] == "success"
    assert recorder.threads == {"warehouse-recording"}  # the sending thread never touched the connection


def test_groups_waiting_for_a_slow_warehouse_share_a_transaction_and_the_backlog_is_bounded(conn_id, caplog,
                                                                                             monkeypatch):
    import logging

    from associate import recording as recording_module

    caplog.set_level(logging.INFO, logger="associate.recording")
    monkeypatch.setattr(recording_module, "LOGGED_WAIT_SECONDS", 0.3)
    recorder = CountingRecorder(conn_id, "run-slow")
    recorder.go.clear()  # the warehouse is busy
    recording = RecordingThread(recorder, backlog=3)
    recording.put([outcome("k0")])
    assert recorder.entered.wait(timeout=30)  # taken at once: its transaction waits for the warehouse
    recording.put([outcome("k1")])
    recording.put([outcome("k2")])
    blocked = threading.Thread(target=recording.put, args=([outcome("k3")],))
    blocked.start()
    blocked.join(timeout=0.5)
    assert blocked.is_alive()  # three batches unrecorded: the fourth waits
    recorder.go.set()
    blocked.join(timeout=30)
    recording.close()
    assert not blocked.is_alive()
    # The task log says why the sending stood still.
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Waited ")]
    assert len(waits) == 1 and "3 answered batches were waiting to be recorded (at most 3 may wait)" in waits[0]
    assert recorder.transactions[0] == 1 and sum(recorder.transactions) == 4
    assert len(recorder.transactions) < 4  # the ones that waited went in together
    results = warehouse.read_table(conn_id, tables.RESULTS_TABLE, "run-slow")
    assert sorted(results["entity_key"]) == ["k0", "k1", "k2", "k3"]


def test_a_failed_recording_stops_the_sending_with_its_error(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_GONE",
                       json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "no-such-dir" / "w.db")}))
    recording = RecordingThread(warehouse.BatchRecorder("warehouse_gone", "run-x"))
    recording.put([outcome("a")])
    with pytest.raises(Exception, match="unable to open database file"):
        recording.close()
    with pytest.raises(Exception, match="unable to open database file"):
        recording.put([outcome("b")])
