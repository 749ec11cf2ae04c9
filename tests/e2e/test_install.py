"""README's install step into a fresh Airflow home: copy dags/ and plugins/, pip install, run the DAG."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dag_support import ROOT, TILL, finished_run

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def deployment_env(home: Path, warehouse: Path, sandbox_url: str) -> dict[str, str]:
    """What a deployment has: AIRFLOW_HOME and the two connections; no checkout on any path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "ASSOCIATE_")) and k != "PYTHONPATH"}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
        "AIRFLOW_CONN_CAPILLARY_DEFAULT": json.dumps({
            "conn_type": "http", "host": sandbox_url, "login": TILL[0], "password": TILL[1],
            "extra": {"rate_limit_rpm": 60000},
        }),
    })
    return env


def test_readme_install_into_a_fresh_airflow_home_runs_the_dag(tmp_path):
    from associate.sandbox.launcher import SandboxProcess
    from bench.generate import generate_warehouse, load_sqlite

    home = tmp_path / "airflow"
    home.mkdir()
    # README, "Pointing it at a real warehouse": copy dags/ and plugins/, install the requirements.
    shutil.copytree(ROOT / "dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "plugins", home / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    pip = subprocess.run(
        [str(BIN / "pip"), "install", "-q", "-r", str(ROOT / "requirements.txt"), "-c", str(ROOT / "constraints.txt")],
        capture_output=True, text=True, timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]

    warehouse = tmp_path / "warehouse.db"
    load_sqlite(warehouse, *generate_warehouse(40, seed=5, bad_ratio=0.0))
    with SandboxProcess(tmp_path / "sandbox.db", credentials=[TILL]) as sandbox:
        env = deployment_env(home, warehouse, sandbox.url)
        migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        proc = subprocess.run(
            [str(BIN / "airflow"), "dags", "test", "associate_customers", "-c", '{"mode": "full"}'],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )
    run = finished_run(proc.returncode, proc.stdout + proc.stderr)
    assert run.returncode == 0 and run.state == "success", run.log[-5000:]
    with sqlite3.connect(warehouse) as db:
        statuses = dict(db.execute(
            "SELECT status, count(*) FROM associate_sync_results WHERE run_id = ? AND entity = 'customer' "
            "GROUP BY status", (run.run_id,)).fetchall())
    assert statuses.get("success", 0) > 0, statuses
    # Staged files and reports land under the fresh home, not in the checkout.
    assert (home / "associate" / "staging").is_dir() and (home / "associate" / "reports").is_dir()
