"""One rate budget per API key on a real Celery deployment: two workers, two `post` tasks at once.

`make airflow EXECUTOR=celery`'s deployment (scripts/local_airflow.py): CeleryExecutor with
two workers of one slot each on the machine's Redis, a PostgreSQL metadata DB, the pool
`capillary_api` of 2 slots, and the limiter's budget in Redis
(`[associate] rate_limit_redis_conn_id`). The sandbox allows the key 60 requests a minute.
Batches of one customer make more than 300 bulk requests, sent by two `post` tasks at a
time, one on each worker. The sandbox's own counters then show: no 60 s window over the
budget, no HTTP 429, and a send phase that used at least 90 % of the budget. Before the
shared limiter, each process had its own budget: up to 72 requests a minute and 11 % of
the bulk calls answered 429 in the same setting.
"""

from __future__ import annotations

import uuid

import pytest

from dag_support import DAG_ID
from deployment_support import require_redis, running_deployment, worker_of
from reliability_support import wait_until

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/11"
BUDGET = 60
# About 330 valid customers in batches of one: more than 300 bulk requests in 6 chunks.
CUSTOMERS, CONF = 340, {"mode": "full", "batch_size": 1}
BULK = "POST /v2/customers/bulk"


@pytest.mark.timeout(1500)
def test_two_workers_share_one_budget_use_it_and_never_pass_it(tmp_path, pg_url):
    from bench.generate import generate_warehouse, load_sqlite

    require_redis(REDIS_URL)
    warehouse = tmp_path / "warehouse.db"
    load_sqlite(warehouse, *generate_warehouse(CUSTOMERS, seed=31, bad_ratio=0.0))
    settings = dict(
        executor="celery", warehouse=warehouse, metadata_url=pg_url, redis_url=REDIS_URL,
        sandbox_args=("--rate-limit-rpm", str(BUDGET)), workers=2, worker_concurrency=1,
        capillary_extra={"rate_limit_rpm": BUDGET, "backoff_base": 0.05},
        extra_env={"AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"associate-budget-{uuid.uuid4().hex[:8]}",
                   "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"},
    )
    seen: dict[int, set[str]] = {}  # map index -> workers seen running that post task
    most_at_once = 0
    with running_deployment(tmp_path / "state", **settings) as deployment:
        deployment.wait_for_dag()
        deployment.unpause()
        run_id = deployment.trigger(CONF)

        def finished():
            nonlocal most_at_once
            running = [ti for ti in deployment.task_instances(run_id)
                       if ti["task_id"] == "post" and ti["state"] == "running" and ti.get("pid")]
            for ti in running:
                worker = worker_of(deployment, ti["pid"])
                if worker:
                    seen.setdefault(ti["map_index"], set()).add(worker)
            most_at_once = max(most_at_once, len(running))
            return deployment.run_state(run_id) in ("success", "failed")

        wait_until(finished, timeout=1200, what=f"run {run_id} of {DAG_ID}", poll=2)
        state = deployment.run_state(run_id)
        stats = deployment.sandbox_stats()
        logs = "\n".join(path.read_text(errors="replace")
                         for path in (deployment.home / "logs").rglob("task_id=post/**/*.log"))
        assert state == "success", f"{run_id}: {state}\n{deployment.log_tails()}"

    bulk = sum(stats["requests"][BULK].values())
    span = stats["spans"][BULK]
    sustained = (bulk - 1) / (span["last"] - span["first"]) * 60
    assert bulk >= 300, stats["requests"]
    assert stats["rateLimited"] == 0, stats["requests"]
    assert stats["busiestWindow"]["requests"] <= BUDGET, stats["busiestWindow"]
    assert sustained >= 0.9 * BUDGET, f"{bulk} bulk requests in {span['last'] - span['first']:.0f} s"
    # Two post tasks at once, on both workers, each booking its requests in Redis.
    assert most_at_once >= 2 and set().union(*seen.values()) == {"worker1", "worker2"}, seen
    assert "shared through Redis (redis_default)" in logs
