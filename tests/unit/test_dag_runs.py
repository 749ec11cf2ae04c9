"""How the DAG runs: manual runs with and without a logical date, first deployment, backfills.

The task context is the one the task SDK really builds (``RuntimeTaskInstance
.get_template_context``) from the DAG run the API server hands a worker: for a run triggered
with ``"logical_date": null`` or by ``airflow dags trigger`` without a date, that run has no
logical date and no data interval, and the context has no ``data_interval_*`` keys.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import jinja2
import pendulum
import pytest

from associate import tasks

DAG_ID = "associate_customers"
RUN_AFTER = pendulum.datetime(2026, 3, 2, 13, 45, 10, tz="UTC")
DAY = (pendulum.datetime(2026, 3, 1, tz="UTC"), pendulum.datetime(2026, 3, 2, tz="UTC"))


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    from dag_support import ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def runtime_context(dag, task_id: str, *, logical_date=None, interval=None, conf=None):
    """The template context the task SDK builds for a task of a run, as on a worker."""
    from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    run = DagRun(
        dag_id=DAG_ID, run_id="manual__test", logical_date=logical_date,
        data_interval_start=interval[0] if interval else None, data_interval_end=interval[1] if interval else None,
        run_after=RUN_AFTER, start_date=RUN_AFTER, end_date=None, run_type="manual", state="running",
        conf=conf or {}, consumed_asset_events=[], partition_key=None,
    )
    task = dag.get_task(task_id)
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(), task_id=task_id, dag_id=DAG_ID, run_id=run.run_id, try_number=1, map_index=-1,
        dag_version_id=uuid.uuid4(), task=task, max_tries=2,
        _ti_context_from_server=TIRunContext(dag_run=run, max_tries=2),
    )
    return task, ti.get_template_context()


def test_a_run_without_logical_date_has_no_data_interval_to_template(dag):
    # What broke `extract` (UndefinedError, three tries): the context really lacks it.
    task, context = runtime_context(dag, "extract", conf={"mode": "full"})
    assert "data_interval_start" not in context and "logical_date" not in context
    # Rendered as a native object (render_template_as_native_obj), the old template gave the
    # task an Undefined, which raised the first time the task used it.
    value = task.render_template("{{ data_interval_start }}", context)
    assert isinstance(value, jinja2.Undefined)
    with pytest.raises(jinja2.UndefinedError, match="data_interval_start"):
        str(value)


@pytest.mark.parametrize("task_id", ["extract", "validate", "ensure_companies", "detect_changes",
                                     "build_batches", "write_back", "report"])
def test_every_template_renders_without_a_logical_date(dag, task_id):
    task, context = runtime_context(dag, task_id, conf={"mode": "full", "dry_run": True})
    for name, value in task.op_kwargs.items():
        if isinstance(value, str):  # the rest are upstream outputs, resolved from XCom
            rendered = task.render_template(value, context)
            assert not isinstance(rendered, jinja2.Undefined), f"{task_id}.{name}: {value} is undefined"
            str(rendered)
    if task_id == "extract":
        task.render_template_fields(context)
        assert task.op_kwargs["mode"] == "full"
        assert not any("interval" in name for name in task.op_kwargs)


def test_extract_of_a_run_without_logical_date_covers_the_latest_complete_utc_day(dag, monkeypatch):
    from airflow.sdk.execution_time.context import set_current_context

    seen = {}
    monkeypatch.setattr(tasks, "extract", lambda **kwargs: seen.update(kwargs) or {"ok": True})
    _, context = runtime_context(dag, "extract")
    with set_current_context(context):
        assert tasks.extract_run(warehouse_conn_id="w", run_id="r", mode="incremental") == {"ok": True}
    assert (seen["interval_start"], seen["interval_end"]) == DAY
    assert seen["mode"] == "incremental"
    # The same interval Airflow gives a manual run with a logical date (the UI form's pre-filled one).
    inferred = dag.timetable.infer_manual_data_interval(run_after=RUN_AFTER)
    assert (inferred.start, inferred.end) == DAY


def test_a_run_with_a_data_interval_keeps_it(dag):
    interval = (pendulum.datetime(2026, 2, 10, tz="UTC"), pendulum.datetime(2026, 2, 11, tz="UTC"))
    _, context = runtime_context(dag, "extract", logical_date=interval[1], interval=interval)
    assert tasks.run_interval(context) == interval


@pytest.mark.parametrize("run_after, day", [
    (datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc), DAY),
    (datetime(2026, 3, 2, 23, 59, 59, tzinfo=timezone.utc), DAY),
    (datetime(2026, 3, 2, 1, 30), DAY),  # naive: UTC
])
def test_without_a_timetable_the_interval_is_the_latest_complete_utc_day(run_after, day):
    class Run:
        pass

    run = Run()
    run.run_after = run_after
    assert tasks.run_interval({"dag_run": run}) == day


def test_without_anything_the_interval_ends_at_todays_midnight_utc():
    start, end = tasks.run_interval({})
    now = datetime.now(timezone.utc)
    assert end <= now and (now - end).total_seconds() < 86400 and (end - start).total_seconds() == 86400
    assert (end.hour, end.minute, end.second, end.microsecond) == (0, 0, 0, 0)


def test_safe_first_deployment_attributes(dag):
    # README: paused until a dry run and a full sync; one run at a time; unpausing starts
    # only the latest complete day (catchup off), older days are backfills.
    assert dag.is_paused_upon_creation is True
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert not any(task.depends_on_past for task in dag.tasks)  # a failed day never blocks the next
    # Every task comes after the run gate: two runs never send at once (backfills included).
    gate = dag.get_task("wait_for_earlier_runs")
    assert gate.mode == "reschedule" and not gate.upstream_task_ids
    assert gate.get_flat_relative_ids(upstream=False) == set(dag.task_ids) - {gate.task_id}
    assert "latest complete UTC day" in dag.doc_md


def test_readme_and_doc_md_say_the_same_about_manual_runs_and_backfills(dag):
    from dag_support import ROOT

    readme = " ".join((ROOT / "README.md").read_text().split())
    doc = " ".join(dag.doc_md.split())
    for phrase in ("latest complete UTC day", "wait_for_earlier_runs", "reads every row", "starts paused"):
        assert phrase in readme and phrase in doc, phrase
    assert "reads everything" not in doc  # the old doc_md meaning of a manual run


def test_a_backfill_starts_ten_days_at_once_unless_told_so_the_dag_orders_them():
    # Why the DAG has its own run gate: `airflow backfill create` without --max-active-runs gives
    # the backfill its own limit of 10 concurrent runs (the scheduler checks that limit,
    # not the DAG's max_active_runs, for backfill runs).
    from airflow.cli.cli_config import ARG_MAX_ACTIVE_RUNS
    from airflow.models.backfill import Backfill

    assert ARG_MAX_ACTIVE_RUNS.flags == ("--max-active-runs",)
    assert "default" not in ARG_MAX_ACTIVE_RUNS.kwargs
    assert Backfill.__table__.c.max_active_runs.default.arg == 10


def test_the_trigger_form_requires_no_optional_param(dag):
    # Airflow's trigger form marks a Param required unless its type allows null; every
    # Param has a title and a description, and a required one has a default to start from.
    optional = {"customer_keys", "phone_region", "approval_threshold"}
    for name, param in dag.params.items():
        schema = param.schema
        assert schema.get("title") and param.description, name
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if name in optional:
            assert "null" in types and param.value is None, name
        else:
            assert "null" not in types and param.value is not None, name
