"""The approval gate on a real deployment (`make airflow`: LocalExecutor, the sandbox, a sample warehouse).

A full run above ``approval_threshold`` waits in ``approve_send`` (state ``awaiting_input``)
with nothing sent, its request readable through the REST API. Rejected: nothing is sent,
write-back and the report still run, each customer it would have sent is recorded "not sent"
and the report names who rejected. The next run (those customers failed last time, so it
sends them again) is approved through the REST API and sends them.
"""

from __future__ import annotations

import sqlite3
import time
from urllib.parse import quote

import pytest

from dag_support import DAG_ID

from deployment_support import running_deployment

pytestmark = pytest.mark.slow

THRESHOLD = 5


def wait_for_approval_request(deployment, run_id: str, timeout: float = 400) -> dict:
    """The run's HITL request, once ``approve_send`` waits in ``awaiting_input`` and its first try has ended.

    Airflow 3.3.2 (LocalExecutor) races an answer given before the scheduler has processed
    the end of the process that parked the task: it then takes the resumed try for a task
    "changed externally", fails it and retries, so the request is asked again. A person
    answers later than that; the test waits for the scheduler's "TaskInstance Finished" of
    the parking process before answering.
    """
    deadline = time.monotonic() + timeout
    states = {}
    parked = f"TaskInstance Finished: dag_id={DAG_ID}, task_id=approve_send, run_id={run_id},"
    while time.monotonic() < deadline:
        states = {ti["task_id"]: ti["state"] for ti in deployment.task_instances(run_id)}
        scheduler_log = (deployment.logs / "scheduler.log").read_text(errors="replace")
        if states.get("approve_send") == "awaiting_input" and parked in scheduler_log:
            resp = deployment.api("GET", hitl_path(run_id))
            assert resp.status_code == 200, resp.text
            return resp.json()
        assert deployment.run_state(run_id) not in ("success", "failed"), f"{states}\n{deployment.log_tails()}"
        time.sleep(2)
    raise AssertionError(f"approve_send never awaited input: {states}\n{deployment.log_tails()}")


def hitl_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/approve_send/-1/hitlDetails"


def task_states(deployment, run_id: str) -> dict[str, set[str]]:
    states: dict[str, set[str]] = {}
    for ti in deployment.task_instances(run_id):
        states.setdefault(ti["task_id"], set()).add(ti["state"])
    return states


def customer_results(warehouse, run_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(warehouse) as db:
        return db.execute("SELECT status, error_message FROM associate_sync_results WHERE run_id = ? "
                          "AND entity = 'customer'", (run_id,)).fetchall()


@pytest.mark.timeout(1500)
def test_a_mass_send_waits_for_approval_and_a_rejection_sends_nothing(tmp_path):
    warehouse = tmp_path / "state" / "warehouse.db"
    with running_deployment(tmp_path / "state", sample_customers=40,
                            extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}) as deployment:
        deployment.wait_for_dag()
        deployment.unpause()

        # Rejected: nothing is sent, the run still writes its results and its report.
        rejected = deployment.trigger({"mode": "full", "approval_threshold": THRESHOLD})
        request = wait_for_approval_request(deployment, rejected)
        assert request["options"] == ["Approve", "Reject"] and request["defaults"] == ["Reject"], request
        assert rejected in request["subject"] and "to register" in request["body"], request
        assert deployment.sandbox_stats()["customers"] == 0, "customers were sent before the approval"
        answer = deployment.api("PATCH", hitl_path(rejected), json={"chosen_options": ["Reject"]})
        assert answer.status_code == 200, answer.text
        assert deployment.wait_for_run(rejected, timeout=400) == "success", deployment.log_tails()
        states = task_states(deployment, rejected)
        assert states["approve_send"] == {"success"} and states["post"] == {"skipped"}, states
        assert states["write_back"] == states["report"] == {"success"}, states
        assert states["check_failures"] == {"skipped"}, states  # nothing was tried, nothing to check
        assert deployment.sandbox_stats()["customers"] == 0, "a rejected run sent customers"
        results = customer_results(warehouse, rejected)
        not_sent = [message for status, message in results if "rejected at the approval gate" in (message or "")]
        assert len(not_sent) > THRESHOLD and {status for status, _ in results} == {"failed"}, results[:5]
        assert f"by {answer.json()['responded_by']['name']}" in not_sent[0], not_sent[0]
        report = deployment.api("GET", f"/associate/reports/{DAG_ID}/{quote(rejected, safe='')}/report.html")
        assert report.status_code == 200 and "Send rejected at the approval gate by" in report.text, report.text[:800]

        # Approved: those customers (failed last time) are sent.
        approved = deployment.trigger({"mode": "full", "approval_threshold": THRESHOLD})
        wait_for_approval_request(deployment, approved)
        assert deployment.sandbox_stats()["customers"] == 0
        answer = deployment.api("PATCH", hitl_path(approved), json={"chosen_options": ["Approve"]})
        assert answer.status_code == 200, answer.text
        assert deployment.wait_for_run(approved, timeout=400) == "success", deployment.log_tails()
        states = task_states(deployment, approved)
        assert states["post"] == {"success"}, states
        received = deployment.sandbox_stats()["customers"]

    sent = [status for status, _ in customer_results(warehouse, approved) if status in ("success", "warning")]
    assert len(sent) == received == len(not_sent), (len(sent), received, len(not_sent))
