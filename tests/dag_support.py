"""Running the real DAG with the real Airflow CLI against a warehouse and the sandbox."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
TILL = ("test.till", "test-till-password")
DAG_ID = "associate_customers"
# A manual run covers the latest complete interval; a first sync reads everything.
FULL = {"mode": "full"}


@dataclass
class DagRun:
    """One finished ``airflow dags test`` run."""

    returncode: int
    log: str
    run_id: str | None
    state: str | None

    def task_log_contains(self, text: str) -> bool:
        """Whether the combined log of the run contains ``text``."""
        return text in self.log


def airflow_env(home: Path, warehouse_conn: dict | str, sandbox_url: str, **extra: str) -> dict[str, str]:
    """An environment for the Airflow CLI with both connections set as AIRFLOW_CONN_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT / "plugins"),
        "ASSOCIATE_STAGING_BASE": "file://" + str(home / "staging"),
        "ASSOCIATE_REPORTS_DIR": str(home / "reports"),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": warehouse_conn if isinstance(warehouse_conn, str) else json.dumps(warehouse_conn),
        "AIRFLOW_CONN_CAPILLARY_DEFAULT": json.dumps({
            "conn_type": "http", "host": sandbox_url, "login": TILL[0], "password": TILL[1],
            "extra": {"rate_limit_rpm": 60000, "backoff_base": 0.05},
        }),
    })
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    """Create the Airflow metadata database of ``env``'s AIRFLOW_HOME."""
    proc = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def run_dag(env: dict[str, str], *, logical_date: str | None = None, conf: dict | None = None,
            timeout: int = 300) -> DagRun:
    """``airflow dags test associate_customers [DATE] [-c CONF]``."""
    cmd = [AIRFLOW, "dags", "test", DAG_ID]
    if logical_date:
        cmd.append(logical_date)
    if conf is not None:
        cmd += ["-c", json.dumps(conf)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return finished_run(proc.returncode, proc.stdout + proc.stderr)


def finished_run(returncode: int, log: str) -> DagRun:
    """The run an ``airflow dags test`` output reports in its "DagRun Finished" line."""
    run_id = state = None
    for line in log.splitlines():
        if "DagRun Finished" in line and "run_id=" in line:
            run_id = line.split("run_id=", 1)[1].split(",", 1)[0]
            state = line.split("state=", 1)[1].split(",", 1)[0]
    return DagRun(returncode, log, run_id, state)


def task_tries(home: Path, run_id: str, task_id: str) -> tuple[int, str, int]:
    """(try_number, state, earlier tries kept in history) of one task of a run, from the metadata DB."""
    import sqlite3

    with sqlite3.connect(home / "airflow.db") as db:
        try_number, state = db.execute(
            "SELECT try_number, state FROM task_instance WHERE run_id = ? AND task_id = ?", (run_id, task_id),
        ).fetchone()
        (earlier,) = db.execute(
            "SELECT count(*) FROM task_instance_history WHERE run_id = ? AND task_id = ?", (run_id, task_id),
        ).fetchone()
    return try_number, state, earlier


# Fixtures of the DAG runs' test modules (import them by name).

@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    migrate(airflow_env(home, {"conn_type": "sqlite", "host": str(home / "unused.db")}, "http://127.0.0.1:9"))
    return home


@pytest.fixture(scope="module")
def sample():
    from bench.generate import generate_warehouse

    return generate_warehouse(120, seed=3, bad_ratio=0.06)


@pytest.fixture
def sandbox(tmp_path):
    from associate.sandbox.launcher import SandboxProcess

    with SandboxProcess(tmp_path / "sandbox.db", credentials=[TILL]) as proc:
        yield proc


@pytest.fixture
def sqlite_warehouse(tmp_path, sample):
    from bench.generate import load_sqlite

    path = tmp_path / "warehouse.db"
    load_sqlite(path, *sample)
    return path


def sqlite_rows(path: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()
