"""Task functions of the DAG's end: the run report, the failure check, and publishing reports.

Like ``associate.tasks``: each function is one task, reads staged inputs by reference and
returns only small values; heavy imports stay inside the functions.
"""

from __future__ import annotations

import logging
from typing import Any

from associate.masking import PiiMaskingFilter
from associate.run_reports import publish_reports, reports_dir
from associate.tables import ENTITY_CUSTOMER
from associate.run_outcomes import all_values, run_outcomes

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())

DAG_ID = "associate_customers"


def _dag_id() -> str:
    """The running DAG's id (the report link names it); this DAG's outside a task."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()["dag"].dag_id
    except Exception:  # noqa: BLE001 - no task context (tests, scripts)
        return DAG_ID


def report(
    *,
    run_id: str,
    extracted: dict[str, Any],
    validated: dict[str, Any],
    company_outcomes: str,
    customer_outcomes: list[str] | None,
    warehouse_conn_id: str | None = None,
) -> str:
    """Log the run summary as tables and write it as HTML next to the Data Docs."""
    from associate import approval, report_views, staging, warehouse
    from associate.report import SAMPLES_PER_CHECK, SUMMARY_COLUMNS, RunSummary

    plan = staging.read_json(staging.run_path(run_id, "plan.json"))
    outcome_frames = run_outcomes(run_id, company_outcomes, customer_outcomes, SUMMARY_COLUMNS)
    summary = RunSummary.build(
        run_id=run_id,
        extracted=extracted["counts"],
        quarantine_summary=staging.read_frame(validated["summary"]),
        plan=plan,
        outcomes=outcome_frames,
        data_docs=validated.get("data_docs"),
        # The rows behind the counts (masked in the warehouse already) and the latest runs.
        quarantine_rows=(warehouse.quarantine_samples(warehouse_conn_id, run_id, SAMPLES_PER_CHECK)
                         if warehouse_conn_id else None),
        history=warehouse.run_history(warehouse_conn_id, exclude_run_id=run_id) if warehouse_conn_id else None,
    )
    # Customers a person rejected at the approval gate were not sent: the report says so first.
    summary.notice = approval.rejection_line(run_id)
    # to_text() opens with the run's id and its first table is titled "Run summary".
    log.info("%s", summary.to_text())
    path = reports_dir(run_id) / "report.html"
    summary.to_html(path)
    log.info("HTML report: %s", path)
    published = publish_reports(run_id)
    if published:
        log.info("Published for the UI: %s", published)
    log.info("In the Airflow UI: the run's \"Report\" tab (plugin associate_reports), or %s",
             f"{report_views.PREFIX}/reports/{_dag_id()}/{run_id}/{report_views.REPORT_FILE}")
    return str(path)


def check_failures(
    *,
    run_id: str,
    customer_outcomes: list[str] | None,
    max_failed_ratio: float,
    report_path: str | None = None,
) -> dict[str, Any]:
    """Fail the run (after write-back and report) when too many customers failed; the alert says so.

    The ratio is over the customers the run tried to send (the ``post`` outcomes): a child
    held back because its parent failed counts as failed, since it did not sync either.
    """
    import pandas as pd

    from associate import staged, staging
    from associate.exceptions import PermanentError
    from associate.tables import STATUS_FAILED

    frames = [staging.read_frame(uri, ["entity", "status", "error_message"])
              for uri in all_values(customer_outcomes) if uri]
    outcomes = pd.concat(frames, ignore_index=True) if frames else staged.OUTCOMES.empty()
    customers = outcomes.loc[outcomes["entity"] == ENTITY_CUSTOMER]
    failed_rows = customers.loc[customers["status"] == STATUS_FAILED]
    total, failed = len(customers), len(failed_rows)
    held = int(failed_rows["error_message"].fillna("").str.startswith(staged.PARENT_FAILED_PREFIX).sum())
    ratio = failed / total if total else 0.0
    limit = float(max_failed_ratio)
    counts = {"customers": total, "failed": failed, "held_back_parent_failed": held,
              "failed_ratio": round(ratio, 4), "max_failed_ratio": limit}
    summary = (f"{failed} of {total} customers the run tried to send failed ({100 * ratio:.1f} %; "
               f"{held} of them held back because their parent failed)")
    log.info("Failures: %s; the run fails above %.1f %%", summary, 100 * limit)
    if ratio > limit:
        raise PermanentError(
            f"Run {run_id}: {summary}, more than max_failed_ratio {100 * limit:.1f} %. Every outcome is "
            f"written back (associate_sync_results, run_id = {run_id!r}); the report lists the failed "
            f"customers and what to do: {report_path or 'see the report task'}. Fix the causes; the next "
            "run re-sends them."
        )
    return counts
