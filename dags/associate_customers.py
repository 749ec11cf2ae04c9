"""Keep Capillary's B2B customer hierarchy in sync with the warehouse."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from associate import alerts, report_tasks, tasks
from associate.approval import ApproveSendOperator
from associate.operators import AssociateCustomersOperator, lineage_task
from associate.tables import QUARANTINE_TABLE, RESULTS_TABLE, STATE_TABLE, WARNINGS_TABLE

WAREHOUSE_CONN_ID = "warehouse_default"
CAPILLARY_CONN_ID = "capillary_default"
# Bounds concurrent API calls across all workers; create it with the slots your API key allows.
API_POOL = "capillary_api"
# One writer at a time: SQLite allows no more, and it keeps write-back ordered elsewhere too.
WAREHOUSE_POOL = "warehouse_writer"

RESULT_ASSETS = [Asset(name) for name in (RESULTS_TABLE, WARNINGS_TABLE, STATE_TABLE)]
QUARANTINE_ASSET = Asset(QUARANTINE_TABLE)

DOC_MD = """
### associate_customers

Reads fleet companies and customers from the warehouse (`warehouse_default`), checks
them with Great Expectations (rejected rows go to `associate_quarantine` with a
reason), makes sure every fleet company exists in Capillary (`capillary_default`),
sends only the customers whose payload changed (or failed last time) to
`POST /v2/customers/bulk`, and writes every outcome and warning back to
`associate_sync_results`, `associate_warnings` and `associate_sync_state`.

* **Scheduled and backfill runs** read the rows changed in their data interval, one UTC
  day (and what those rows depend on).
* **Every manual run** (the UI form, the REST API with or without a logical date,
  `airflow dags trigger`, `airflow dags test`) means the same: in `incremental` mode it
  covers the latest complete UTC day before its logical date, or before its start when it
  has no logical date, like the scheduled run of that day. `mode = full` reads every row,
  whatever the interval. Either way change detection sends only what changed.
* One run at a time: the first task, `wait_for_earlier_runs`, holds a run while another
  run of this DAG is past it, runs with a logical date in date order. Backfills (`airflow
  backfill create`) therefore send one day at a time, in order, even next to scheduled runs.
* The DAG starts paused: run it first with `airflow dags test` (dry run, then
  `mode = full`), then unpause it.
* `dry_run` does everything but the sends and writes a payload preview.
* `customer_keys` re-sends exactly these customers.
* `approval_threshold`: a run that would send more customers than this waits (task
  `approve_send`) until a person approves it under **Browse → Required Actions**; a rejection (or
  no answer within 24 h) sends nothing, and write-back and the report still run.
* `phone_region` reads mobiles without a country code as numbers of that region (default:
  the Capillary connection's `default_phone_region`).
* The run fails before any API call when more than `max_quarantine_ratio` of the rows
  are rejected (a broken load), and after the write-back and the report (task
  `check_failures`) when more than `max_failed_ratio` of the customers it tried to send failed.
* Alerts: with `[associate] alert_to` set, every task that fails for good mails its
  recipients through the SMTP connection `smtp_default` (run, task, counts, log link).

Reports: the run's **Report** tab (plugin `associate_reports`): counts, the failed customers
with what to do, the ones that need action in Capillary, samples of the quarantined rows,
the latest runs as a chart, and a link to the Data Docs. Also in the `report` task's log.
"""


@dag(
    dag_id="associate_customers",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,  # unpausing starts only the latest complete day; older days are backfills
    max_active_runs=1,  # not for backfills (they have their own): wait_for_earlier_runs orders those
    is_paused_upon_creation=True,  # nothing is sent before a dry run and a full sync (README)
    doc_md=DOC_MD,
    tags=["capillary", "crm", "reverse-etl"],
    render_template_as_native_obj=True,
    default_args={
        "retries": 2, "retry_delay": pendulum.duration(minutes=1),
        # A mail per task that fails for good, when [associate] alert_to names recipients.
        "on_failure_callback": alerts.failure_notifiers(),
    },
    params={
        "mode": Param(
            "incremental", type="string", enum=["incremental", "full"],
            title="Mode", description="incremental: rows changed in the data interval; full: every row (resync).",
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run",
            description="Do everything but the sends; write a payload preview next to the report.",
        ),
        "batch_size": Param(
            100, type="integer", minimum=1, maximum=1000, title="Batch size",
            description="Customers per POST /v2/customers/bulk request (the API's batch limit is usually 100).",
        ),
        "max_quarantine_ratio": Param(
            0.2, type="number", minimum=0, maximum=1, title="Max quarantine ratio",
            description="Fail the run before any API call when more than this share of rows is rejected.",
        ),
        "max_failed_ratio": Param(
            0.1, type="number", minimum=0, maximum=1, title="Max failed ratio",
            description="Fail the run (after write-back and report, so the alert fires) when more than this "
                        "share of the customers it tried to send failed.",
        ),
        # Optional: a type that allows null is what the trigger form shows as not required.
        "customer_keys": Param(
            None, type=["null", "array"], items={"type": "string"}, title="Customer keys",
            description="Re-send exactly these customers (warehouse customer_key), changed or not.",
        ),
        # Nullable, so the trigger form does not require it (Airflow marks a Param required otherwise).
        "phone_region": Param(
            None, type=["null", "string"], pattern="^([A-Za-z]{2})?$", title="Phone region",
            description="ISO country code (e.g. IN) that mobiles without a country code are read with. "
                        "Empty: the Capillary connection's default_phone_region (none: they need one).",
        ),
        # Nullable: no threshold, no gate.
        "approval_threshold": Param(
            None, type=["null", "integer"], minimum=0, title="Approval threshold",
            description="Wait for a person's approval (Airflow UI: Browse > Required Actions) before sending when the "
                        "run would send more than this many customers. Empty: never wait.",
        ),
    },
)
def associate_customers():
    # One run past this gate at a time, in logical-date order (backfills included): two runs
    # never send the same customers at once. A waiting run holds no worker slot.
    gate = task.sensor(
        tasks.wait_for_earlier_runs, task_id="wait_for_earlier_runs",
        mode="reschedule", poke_interval=30, timeout=pendulum.duration(hours=12).total_seconds(),
    )()
    # Tasks made with lineage_task tell OpenLineage (when configured) the warehouse tables and
    # Capillary APIs they read and write (associate.lineage); post's operator does the same.
    # The interval is read from the context in Python (tasks.run_interval): a run triggered
    # without a logical date has no data_interval_start to template.
    extracted = lineage_task(tasks.extract_run, task_id="extract")(
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        run_id="{{ run_id }}",
        mode="{{ params.mode }}",
        customer_keys="{{ params.customer_keys }}",
    )
    validated = lineage_task(tasks.validate, task_id="validate", pool=WAREHOUSE_POOL, outlets=[QUARANTINE_ASSET])(
        extracted=extracted,
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        capillary_conn_id=CAPILLARY_CONN_ID,
        run_id="{{ run_id }}",
        max_quarantine_ratio="{{ params.max_quarantine_ratio }}",
        phone_region="{{ params.phone_region }}",
    )
    company_outcomes = lineage_task(tasks.ensure_companies, task_id="ensure_companies", pool=API_POOL)(
        validated=validated,
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        capillary_conn_id=CAPILLARY_CONN_ID,
        run_id="{{ run_id }}",
        dry_run="{{ params.dry_run }}",
    )
    changed = task(tasks.detect_changes, task_id="detect_changes")(
        validated=validated,
        company_outcomes=company_outcomes,
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        run_id="{{ run_id }}",
        customer_keys="{{ params.customer_keys }}",
        dry_run="{{ params.dry_run }}",
        batch_size="{{ params.batch_size }}",
    )
    chunks = task(tasks.build_batches, task_id="build_batches")(
        changes=changed,
        run_id="{{ run_id }}",
        batch_size="{{ params.batch_size }}",
    )
    # Above approval_threshold customers to send, a person approves or rejects in the UI first;
    # a rejection skips post (nothing sent), write_back and report still run (associate.approval).
    approve_send = ApproveSendOperator(
        task_id="approve_send",
        run_id="{{ run_id }}",
        threshold="{{ params.approval_threshold }}",
        dry_run="{{ params.dry_run }}",
    )
    post = AssociateCustomersOperator.partial(
        task_id="post",
        pool=API_POOL,
        capillary_conn_id=CAPILLARY_CONN_ID,
        warehouse_conn_id=WAREHOUSE_CONN_ID,
    ).expand_kwargs(chunks)
    customer_outcomes = post.output
    written = lineage_task(
        tasks.write_back, task_id="write_back", pool=WAREHOUSE_POOL,
        trigger_rule="none_failed", outlets=RESULT_ASSETS,
    )(
        run_id="{{ run_id }}",
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        company_outcomes=company_outcomes,
        customer_outcomes=customer_outcomes,
    )
    summary = task(report_tasks.report, task_id="report", trigger_rule="none_failed")(
        run_id="{{ run_id }}",
        warehouse_conn_id=WAREHOUSE_CONN_ID,
        extracted=extracted,
        validated=validated,
        company_outcomes=company_outcomes,
        customer_outcomes=customer_outcomes,
    )
    checked = task(report_tasks.check_failures, task_id="check_failures", retries=0)(
        run_id="{{ run_id }}",
        customer_outcomes=customer_outcomes,
        max_failed_ratio="{{ params.max_failed_ratio }}",
        report_path=summary,
    )
    gate >> extracted
    chunks >> approve_send >> post
    written >> summary >> checked


associate_customers()
