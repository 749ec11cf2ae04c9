"""SIGKILL of the Celery worker running a ``post`` task halfway through its chunk (`make airflow EXECUTOR=celery`).

The deployment of scripts/local_airflow.py with two workers on the machine's Redis and a
PostgreSQL metadata DB; the sandbox answers slowly so a chunk takes several seconds. The
worker whose process tree holds the running ``post`` task is killed with everything it
started. The scheduler notices the missing heartbeat, Airflow retries the task on the
other worker, and the audit of tests/reliability_support.py checks through the sandbox's
own lookups that every valid customer exists exactly once and that the results and state
tables agree with it. No Redis or PostgreSQL is a failure, never a skip.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest

from dag_support import DAG_ID
from deployment_support import kill_tree, require_redis, running_deployment, worker_of
from reliability_support import AUDITOR, Warehouse, audit, results_cover, wait_until

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/12"
# Many small batches in one chunk (build_batches: fewer than CHUNK_MIN_BATCHES batches per chunk).
CONF = {"mode": "full", "batch_size": 2}
SANDBOX_LATENCY_MS = "300"
# The DAG retries after a minute; the test's cluster policy shortens that so the suite stays short.
LOCAL_SETTINGS = textwrap.dedent("""
    from datetime import timedelta

    def task_policy(task):
        task.retry_delay = timedelta(seconds=5)
""")


class SandboxView:
    """What reliability_support.audit needs of a sandbox: its URL and counters."""

    def __init__(self, deployment):
        self.url = deployment.sandbox_url
        self.stats = deployment.sandbox_stats


def test_sigkill_of_the_worker_running_post_is_retried_and_sends_each_customer_once(tmp_path, pg_url):
    from bench.generate import generate_warehouse

    require_redis(REDIS_URL)
    companies, customers = generate_warehouse(80, seed=23, bad_ratio=0.05)
    warehouse = Warehouse.sqlite(tmp_path / "warehouse.db", companies, customers)
    state_dir = tmp_path / "state"
    (state_dir / "home" / "config").mkdir(parents=True)
    (state_dir / "home" / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    settings = dict(
        executor="celery", warehouse=warehouse.sqlite_path, metadata_url=pg_url, redis_url=REDIS_URL,
        sandbox_args=("--latency-ms", SANDBOX_LATENCY_MS), sandbox_credentials=(AUDITOR,),
        workers=2, worker_concurrency=1,
        extra_env={
            # A queue of this test's own: other deployments on the same Redis db never take its tasks.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"associate-kill-{uuid.uuid4().hex[:8]}",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # A dead worker's task is failed (and retried) once it missed heartbeats this long.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        },
    )
    with running_deployment(state_dir, **settings) as deployment:
        deployment.wait_for_dag()
        deployment.unpause()
        run_id = deployment.trigger(CONF)

        def post_sending():
            """(task instance, worker) of a post task whose chunk has started reaching the sandbox."""
            if not deployment.sandbox_stats()["elements"]["received"]:
                return None
            for ti in deployment.task_instances(run_id):
                if ti["task_id"] == "post" and ti["state"] == "running" and ti.get("pid"):
                    worker = worker_of(deployment, ti["pid"])
                    if worker and worker.startswith("worker"):
                        return ti, worker
            return None

        victim, worker = wait_until(post_sending, timeout=300, what="a post task sending its chunk", poll=0.5)
        killed = kill_tree(deployment.running()[worker])
        received_at_kill = deployment.sandbox_stats()["elements"]["received"]
        state = deployment.wait_for_run(run_id, timeout=300)
        tries = {(ti["task_id"], ti["map_index"]): ti for ti in deployment.task_instances(run_id)}
        log_tails = deployment.log_tails()
        assert state == "success", f"{DAG_ID} {run_id}: {state}\n{tries}\n{log_tails}"
        # The audit reads Capillary's state: a sandbox without the latency answers its lookups at once.
        deployment.restart_sandbox()
        valid = set(customers["customer_key"]) - warehouse.quarantined_customers()
        report = audit(SandboxView(deployment), warehouse, customers, valid)
        missing_results = results_cover(warehouse, valid)
        survivors = deployment.running()

    assert len(killed) >= 3, f"the worker, its pool process and the task: {killed}"
    assert 0 < received_at_kill < len(valid), "the worker was not killed in the middle of the sends"
    retried = tries[("post", victim["map_index"])]
    assert retried["try_number"] >= 2 and retried["state"] == "success", retried
    assert worker not in survivors and {"worker1", "worker2"} - {worker} <= set(survivors)
    assert not report.problems, "\n".join(report.problems[:20])
    assert report.in_capillary == len(valid) >= 0.9 * len(customers)
    assert not missing_results, f"customers without a result row: {sorted(missing_results)[:5]}"
