"""Runs on a real deployment (api-server + scheduler, LocalExecutor, PostgreSQL metadata DB):
manual runs without a logical date, and a backfill whose days Airflow starts at once
(no ``--max-active-runs``) yet send one after the other through the DAG's run gate.

``airflow dags test`` always gives its run a logical date; `airflow dags trigger` without
``--logical-date`` (like REST ``"logical_date": null``) creates a run with none and no data
interval, which only a scheduler runs. Such a run failed in ``extract`` (UndefinedError).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time

import pendulum
import pytest
import requests

from dag_support import AIRFLOW, DAG_ID, ROOT, TILL, airflow_env, migrate

pytestmark = pytest.mark.slow


BACKFILL_DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
DATED_RUN = "2026-03-10T00:00:00Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow(env, *args: str, timeout: int = 180) -> str:
    proc = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"airflow {' '.join(args)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


def metadata_rows(metadata_url: str, query: str, params: tuple) -> list[tuple]:
    """Rows of the Airflow metadata DB, timestamps as ISO-8601 UTC text."""
    import psycopg2

    with psycopg2.connect(metadata_url, options="-c timezone=UTC") as db, db.cursor() as cur:
        cur.execute(query, params)
        return [tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in row) for row in cur.fetchall()]


# Generous bounds: on a loaded machine one run takes minutes (they are bounds, not timings).
@pytest.mark.timeout(1800)
def test_cli_trigger_without_logical_date_runs_on_a_scheduler(tmp_path, pg_url):
    from associate.sandbox.launcher import SandboxProcess
    from bench.generate import generate_warehouse, load_sqlite

    warehouse = tmp_path / "warehouse.db"
    load_sqlite(warehouse, *generate_warehouse(40, seed=5, bad_ratio=0.0))
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    with SandboxProcess(tmp_path / "sandbox.db", credentials=[TILL]) as sandbox:
        env = airflow_env(
            home, {"conn_type": "sqlite", "host": str(warehouse)}, sandbox.url,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            # PostgreSQL, as a deployment would: on SQLite the CLI's writes meet "database is locked"
            # while the scheduler works.
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg_url.replace("postgresql://", "postgresql+psycopg2://", 1),
            AIRFLOW__CORE__PARALLELISM="2",
            # Only the triggered run: no scheduled run when the DAG is unpaused.
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET="associate-test-secret",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        )
        migrate(env)
        airflow(env, "pools", "set", "capillary_api", "2", "API")
        airflow(env, "pools", "set", "warehouse_writer", "1", "writer")
        airflow(env, "dags", "reserialize")
        logs = {name: (home / f"{name}.log").open("w") for name in ("api-server", "scheduler")}
        procs = [subprocess.Popen([AIRFLOW, name], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True) for name, out in logs.items()]
        try:
            airflow(env, "dags", "unpause", DAG_ID)
            airflow(env, "dags", "trigger", DAG_ID, "-c", json.dumps({"mode": "full"}))
            cli_run = wait_for_run(home, pg_url, procs)
            base = f"http://127.0.0.1:{port}"
            token = requests.get(f"{base}/auth/token", timeout=30).json()["access_token"]
            resp = requests.post(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert resp.status_code == 200, resp.text
            rest_run = wait_for_run(home, pg_url, procs, resp.json()["dag_run_id"])
            # The REST API with a logical date (as the UI form sends it) and conf.
            resp = requests.post(f"{base}/api/v2/dags/{DAG_ID}/dagRuns",
                                 json={"logical_date": DATED_RUN, "conf": {"mode": "incremental"}},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert resp.status_code == 200, resp.text
            dated_run = wait_for_run(home, pg_url, procs, resp.json()["dag_run_id"], dated=True)
            # README's backfill: three days, each with two changed customers, one day at a time.
            keys = [k for (k,) in sqlite3.connect(warehouse).execute(
                "SELECT entity_key FROM associate_sync_state WHERE entity = 'customer' AND last_status = 'success' "
                "ORDER BY entity_key LIMIT 6")]
            with sqlite3.connect(warehouse) as db:
                for i, day in enumerate(BACKFILL_DAYS):
                    for key in keys[2 * i: 2 * i + 2]:
                        db.execute("UPDATE customers SET first_name = first_name || ' B', updated_at = ? "
                                   "WHERE customer_key = ?", (f"{day}T12:00:00+00:00", key))
            # No --max-active-runs: Airflow starts the three days at once, the DAG's gate orders them.
            airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", BACKFILL_DAYS[0],
                    "--to-date", BACKFILL_DAYS[-1])
            backfill_runs = wait_for_backfill(home, pg_url, procs, len(BACKFILL_DAYS))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for out in logs.values():
                out.close()

    for (run_id, state, run_after), requested in ((cli_run, "full"), (rest_run, "incremental")):
        extract_log = task_log(home, run_id, "extract")
        assert state == "success", f"run {run_id}: {state}\n" + extract_log + tail_logs(home)
        assert "UndefinedError" not in extract_log
        # The interval of a run without a logical date: the latest complete UTC day before its start.
        end = pendulum.parse(run_after).in_timezone("UTC").start_of("day")
        assert f"(requested {requested}) for interval [{end.subtract(days=1)}, {end})" in extract_log, extract_log[-3000:]
    assert "Extracting in full mode (requested full)" in task_log(home, cli_run[0], "extract")
    # A run with a logical date covers the latest complete day before it, like the UI form's run.
    assert dated_run[1] == "success", dated_run
    assert "(requested incremental) for interval [2026-03-09 00:00:00+00:00, 2026-03-10 00:00:00+00:00)" \
        in task_log(home, dated_run[0], "extract")
    with sqlite3.connect(warehouse) as db:
        (sent,) = db.execute("SELECT count(*) FROM associate_sync_results WHERE run_id = ? AND status "
                             "IN ('success', 'warning')", (cli_run[0],)).fetchone()
    assert sent >= 30

    # The backfill's days ran at once, yet passed the gate in order, never two past it at once,
    # each sending that day's changes.
    assert [r[1] for r in backfill_runs] == ["success"] * len(BACKFILL_DAYS), backfill_runs
    assert [r[2][:10] for r in backfill_runs] == BACKFILL_DAYS
    spans = [task_span(pg_url, run_id) for run_id, *_ in backfill_runs]
    assert any(later[3] < earlier[4] for earlier, later in zip(backfill_runs, backfill_runs[1:])), \
        f"the days did not start at once: nothing was left for the gate to order {backfill_runs}"
    for earlier, later in zip(spans, spans[1:]):
        assert earlier[1] <= later[0], f"runs overlapped past the gate: {earlier} {later}"
    for i, (run_id, *_rest) in enumerate(backfill_runs):
        with sqlite3.connect(warehouse) as db:
            sent = {k for (k,) in db.execute("SELECT entity_key FROM associate_sync_results WHERE run_id = ? "
                                             "AND entity = 'customer'", (run_id,))}
        assert sent == set(keys[2 * i: 2 * i + 2]), f"{BACKFILL_DAYS[i]}: sent {sorted(sent)}"


def task_span(metadata_url: str, run_id: str) -> tuple[str, str]:
    """When a run's first task after the gate started and its last task ended."""
    rows = dict(metadata_rows(metadata_url, "SELECT task_id, min(start_date) FROM task_instance WHERE dag_id = %s "
                              "AND run_id = %s AND task_id IN ('extract', 'report') GROUP BY task_id",
                              (DAG_ID, run_id)))
    (ended,) = metadata_rows(metadata_url, "SELECT max(end_date) FROM task_instance WHERE dag_id = %s "
                             "AND run_id = %s", (DAG_ID, run_id))[0]
    return rows["extract"], ended


def wait_for_backfill(home, metadata_url: str, procs, count: int, timeout: int = 900) -> list[tuple]:
    """(run_id, state, data_interval_start, start_date, end_date) of the backfill's runs, in interval order."""
    started = time.time()
    while time.time() - started < timeout:
        rows = metadata_rows(metadata_url, "SELECT run_id, state, data_interval_start, start_date, end_date "
                             "FROM dag_run WHERE dag_id = %s AND run_type = 'backfill' ORDER BY data_interval_start",
                             (DAG_ID,))
        if len(rows) == count and all(r[1] in ("success", "failed") for r in rows):
            return rows
        assert all(p.poll() is None for p in procs), tail_logs(home)
        time.sleep(3)
    raise AssertionError(f"the backfill did not finish in {timeout} s: {rows}\n" + tail_logs(home))


def wait_for_run(home, metadata_url: str, procs, run_id: str | None = None,
                 timeout: int = 600, dated: bool = False) -> tuple[str, str, str]:
    """(run_id, state, run_after) of a run (without a logical date unless ``dated``), once it finished."""
    started = time.time()
    while time.time() - started < timeout:
        rows = metadata_rows(metadata_url, "SELECT run_id, state, logical_date, run_after FROM dag_run "
                             "WHERE dag_id = %s ORDER BY run_after", (DAG_ID,))
        row = next((r for r in rows if run_id is None or r[0] == run_id), None)
        if row:
            assert (row[2] is not None) == dated, f"logical date {row[2]!r}: not the run to test"
            if row[1] in ("success", "failed"):
                return row[0], row[1], row[3]
        assert all(p.poll() is None for p in procs), tail_logs(home)
        time.sleep(3)
    raise AssertionError(f"no finished run after {timeout} s\n" + tail_logs(home))


def task_log(home, run_id, task_id) -> str:
    files = sorted((home / "logs").rglob(f"task_id={task_id}/*.log")) if run_id else []
    return "\n".join(f.read_text(errors="replace")[-4000:] for f in files)


def tail_logs(home) -> str:
    return "\n".join(f"--- {name}\n" + (home / f"{name}.log").read_text(errors="replace")[-3000:]
                     for name in ("api-server", "scheduler"))
