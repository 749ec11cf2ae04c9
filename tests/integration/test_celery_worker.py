"""The Celery executor with the project's pins: a real ``airflow celery worker`` on Redis.

README names the Celery executor; with celery 5.7.0 (and apache-airflow-providers-celery
3.26.0) the worker and the scheduler died at start (``cannot import name 'retry' from
'celery.backends.database'``). This starts the worker the way a deployment does, with
the machine's Redis as broker and PostgreSQL as result backend, and has it run tasks of
Airflow's Celery app. No Redis is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from dag_support import AIRFLOW, ROOT

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13

# Runs in its own process: Airflow reads its configuration (broker, backend) once at import.
CLIENT = textwrap.dedent("""
    import json, sys, time
    from airflow.providers.celery.executors.celery_executor_utils import app
    hostname, queue = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 120
    while not app.control.ping(destination=[hostname], timeout=1.0):
        if time.monotonic() > deadline:
            sys.exit("the worker never answered a ping")
    registered = app.control.inspect(destination=[hostname], timeout=5.0).registered() or {}
    ok = app.send_task("celery.accumulate", args=(1, "two", 3), queue=queue)
    value = ok.get(timeout=60)
    bad = app.send_task("execute_workload", args=("not a workload",), queue=queue)
    try:
        bad.get(timeout=60)
        error = None
    except Exception as exc:
        error = type(exc).__name__ + ": " + str(exc)[:300]
    print(json.dumps({"registered": registered.get(hostname, []), "value": value, "ok_id": ok.id,
                      "bad_id": bad.id, "bad_state": bad.state, "error": error}))
""")


def redis_up() -> None:
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required at {REDIS_HOST}:{REDIS_PORT} for the Celery executor test: {exc}")


def test_the_pinned_celery_imports_what_the_celery_provider_needs():
    from importlib.metadata import version

    from celery.backends.database import retry  # noqa: F401  (gone in celery 5.7.0)

    pins = dict(line.strip().split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert version("celery") == pins["celery"], "the venv's celery is not the constraints' one"
    assert version("kombu") == pins["kombu"] and version("billiard") == pins["billiard"]
    proc = subprocess.run([sys.executable, "-c", "from airflow.providers.celery.executors.celery_executor "
                           "import CeleryExecutor; print(CeleryExecutor.__name__)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "CeleryExecutor" in proc.stdout, proc.stderr[-3000:]


def test_airflow_celery_worker_runs_tasks_through_redis_and_postgres(tmp_path, pg_url):
    import psycopg2
    import redis

    redis_up()
    tag = f"associate-test-{uuid.uuid4().hex[:10]}"
    queue, hostname = tag, f"{tag}@{os.uname().nodename}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg_url,
        "PYTHONPATH": str(ROOT / "plugins"),
    })
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [AIRFLOW, "celery", "worker", "--queues", queue, "--concurrency", "1", "--skip-serve-logs",
             "--celery-hostname", hostname, "--pid", str(tmp_path / "worker.pid")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        client = subprocess.run([sys.executable, "-c", CLIENT, hostname, queue], env=env,
                                capture_output=True, text=True, timeout=240)
        worker_log = log_path.read_text(errors="replace")
        assert worker.poll() is None, f"the worker died (exit {worker.returncode}):\n{worker_log[-4000:]}"
        assert client.returncode == 0, client.stdout[-2000:] + client.stderr[-4000:] + "\nworker:\n" + worker_log[-3000:]
        got = json.loads(client.stdout.strip().splitlines()[-1])
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        for key in broker.scan_iter(f"*{tag}*"):
            broker.delete(key)

    assert "execute_workload" in got["registered"], got["registered"]  # Airflow's own task
    assert got["value"] == [1, "two", 3]
    # Airflow's execute_workload really ran on the worker (and refused a non-workload).
    assert got["bad_state"] == "FAILURE" and "ValidationError" in (got["error"] or ""), got
    with psycopg2.connect(pg_url) as db, db.cursor() as cur:  # both results went through PostgreSQL
        cur.execute("SELECT task_id, status FROM celery_taskmeta WHERE task_id IN (%s, %s)",
                    (got["ok_id"], got["bad_id"]))
        assert dict(cur.fetchall()) == {got["ok_id"]: "SUCCESS", got["bad_id"]: "FAILURE"}
