"""One run at a time: a run waits at the DAG's gate while another run of the DAG is past it.

Two runs that read the same sync state would send the same customers at the same time.
The DAG's ``max_active_runs`` orders scheduled and manual runs, but a backfill has its own
(``airflow backfill create`` defaults to 10, counted apart from the DAG's), so the DAG
itself enforces the order: its first task, ``wait_for_earlier_runs``, lets a run through
only when no other run of the DAG is past the gate, runs with a logical date in that
order, and runs without one after every waiting dated run. A waiting run holds no
worker slot (the sensor reschedules).

``airflow dags test`` runs outside the scheduler, where Airflow orders nothing either: a
run it killed stays "running" forever and would hold every later run, so there the gate
only logs what it sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

GATE_TASK_ID = "wait_for_earlier_runs"
# States of a gate task whose run is running and has not passed the gate. Not "null": a
# queued run's tasks are null too. A running run whose gate is still null (for the moment
# before the scheduler schedules it) then counts as past the gate: a wait, never an overlap.
BEFORE_GATE_STATES = ["scheduled", "queued", "running", "up_for_reschedule", "up_for_retry",
                      "deferred", "restarting"]


@dataclass(frozen=True)
class GateView:
    """What one poke of the gate sees of the DAG's runs."""

    logical_date: datetime | None
    running_runs: int  # runs of the DAG in state running, this one included
    runs_before_gate: int  # running runs whose gate task has not succeeded, this one included
    earlier_running: str | None  # run id of the nearest earlier-dated run still running


def may_pass(view: GateView) -> tuple[bool, str]:
    """Whether a run may pass the gate now, and why (or why not) in words for the task log."""
    past_gate = max(0, view.running_runs - view.runs_before_gate)
    if past_gate:
        return False, f"{past_gate} other run(s) of this DAG are past the gate (sending or writing back); waiting"
    if view.earlier_running:
        return False, f"run {view.earlier_running} has an earlier logical date and is still running; waiting for it"
    if view.logical_date is None and view.runs_before_gate > 1:
        others = view.runs_before_gate - 1
        return False, f"{others} run(s) with a logical date are waiting at the gate and go first; waiting"
    return True, "no other run of this DAG is past the gate: this run goes on"


def runs_outside_scheduler() -> bool:
    """Whether the task runs in ``airflow dags test`` (in-process, no scheduler)."""
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms
    except ImportError:  # pragma: no cover - another Airflow layout
        return False
    return isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), InProcessSupervisorComms)


def gate_view(context: Any) -> GateView:
    """Read the gate's view of the DAG's runs through the Task SDK (no metadata DB access)."""
    ti, dag_run = context["ti"], context["dag_run"]
    earlier = ti.get_previous_dagrun(state="running") if dag_run.logical_date is not None else None
    return GateView(
        logical_date=dag_run.logical_date,
        running_runs=ti.get_dr_count(dag_id=ti.dag_id, states=["running"]),
        runs_before_gate=ti.get_ti_count(dag_id=ti.dag_id, task_ids=[ti.task_id], states=BEFORE_GATE_STATES),
        earlier_running=getattr(earlier, "run_id", None),
    )


def wait_for_earlier_runs(context: Any) -> bool:
    """One poke of the gate: True when the run may go on; logs what it waits for."""
    if runs_outside_scheduler():
        log.info("airflow dags test runs outside the scheduler: the run order is not enforced")
        return True
    passed, why = may_pass(gate_view(context))
    log.info("Run order: %s", why)
    return passed
