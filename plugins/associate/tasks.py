"""Task functions of the ``associate_customers`` DAG.

Each function is one task: it reads staged inputs by reference, calls the stage modules,
stages its outputs and returns only small references and counts (what goes through
XCom). Heavy imports stay inside the functions so that parsing the DAG file stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from associate.masking import PiiMaskingFilter
from associate.run_reports import publish_reports, reports_dir
from associate.tables import ENTITY_COMPANY, ENTITY_CUSTOMER

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())


def run_interval(context: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """The data interval a run covers, from its task context; never undefined.

    A run with a logical date (scheduled, backfill, UI form, ``airflow dags test``) has
    Airflow's data interval. A run triggered without one (REST ``"logical_date": null``,
    ``airflow dags trigger`` without ``--logical-date``) has none: it gets the interval
    Airflow gives a manual run, the latest complete one before the run's start
    (``dag_run.run_after``, or now), as the DAG's timetable infers it (for ``@daily`` in
    UTC: the latest complete UTC day).
    """
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return _utc(start), _utc(end)
    dag_run = context.get("dag_run")
    run_after = _utc(getattr(dag_run, "run_after", None) or datetime.now(timezone.utc))
    timetable = getattr(context.get("dag"), "timetable", None)
    infer = getattr(timetable, "infer_manual_data_interval", None)
    if infer is not None:
        interval = infer(run_after=run_after)
        if interval is not None:
            return _utc(interval.start), _utc(interval.end)
    end = run_after.replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=1), end


def _utc(value: datetime) -> datetime:
    import pendulum

    return pendulum.instance(value).in_timezone("UTC")


def wait_for_earlier_runs() -> bool:
    """The DAG's gate: True when no other run of the DAG is past it (``run_order``)."""
    from airflow.sdk import get_current_context

    from associate import run_order

    return run_order.wait_for_earlier_runs(get_current_context())


def extract_run(
    *,
    warehouse_conn_id: str,
    run_id: str,
    mode: str,
    customer_keys: list[str] | None = None,
    sql_dir: str | None = None,
) -> dict[str, Any]:
    """The DAG's ``extract`` task: :func:`extract` over the run's interval (:func:`run_interval`).

    The interval comes from the task context in Python, not from templates: a run without
    a logical date has no ``data_interval_start`` to render.
    """
    from airflow.sdk import get_current_context

    interval_start, interval_end = run_interval(get_current_context())
    return extract(warehouse_conn_id=warehouse_conn_id, run_id=run_id, mode=mode,
                   interval_start=interval_start, interval_end=interval_end,
                   customer_keys=customer_keys, sql_dir=sql_dir)


def extract(
    *,
    warehouse_conn_id: str,
    run_id: str,
    mode: str,
    interval_start: Any = None,
    interval_end: Any = None,
    customer_keys: list[str] | None = None,
    sql_dir: str | None = None,
) -> dict[str, Any]:
    """Read companies and customers from the warehouse and stage them."""
    from concurrent.futures import ThreadPoolExecutor

    from associate import staging, warehouse

    # Re-sending named customers needs their parents and companies too: read everything.
    run_mode = warehouse.effective_mode("full" if customer_keys else mode, interval_start, interval_end)
    if run_mode == "incremental":
        share = warehouse.changed_share(warehouse_conn_id, interval_start=interval_start,
                                        interval_end=interval_end, sql_dir=sql_dir)
        if share is not None and share >= warehouse.FULL_EXTRACT_SHARE:
            log.info("%.0f %% of customers changed in the interval: one full read is cheaper than the "
                     "incremental scope (change detection still sends only what changed)", 100 * share)
            run_mode = "full"
    log.info(
        "Extracting in %s mode (requested %s) for interval [%s, %s)",
        run_mode, mode, interval_start, interval_end,
    )
    def read(entity: str):
        frame = warehouse.extract(
            warehouse_conn_id, entity, mode=run_mode,
            interval_start=interval_start, interval_end=interval_end, sql_dir=sql_dir, arrow_text=True,
        )
        log.info("Extracted %d %s rows", len(frame), entity)
        return frame

    # Two connections, side by side: while one query runs in the database (which releases
    # the GIL), the other's rows are fetched. An incremental run's two queries each walk
    # the customer scope, so this saves about a tenth of a 1 %-change run.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="extract") as pool:
        futures = {entity: pool.submit(read, entity) for entity in (ENTITY_COMPANY, ENTITY_CUSTOMER)}
        frames = {entity: future.result() for entity, future in futures.items()}
    return {
        "mode": run_mode,
        "companies": staging.write_frame(frames[ENTITY_COMPANY], staging.run_path(run_id, "extract", "companies.parquet")),
        "customers": staging.write_frame(frames[ENTITY_CUSTOMER], staging.run_path(run_id, "extract", "customers.parquet")),
        "counts": {"companies": len(frames[ENTITY_COMPANY]), "customers": len(frames[ENTITY_CUSTOMER])},
    }


def validate(
    *,
    extracted: dict[str, Any],
    warehouse_conn_id: str,
    capillary_conn_id: str,
    run_id: str,
    max_quarantine_ratio: float,
    phone_region: str | None = None,
) -> dict[str, Any]:
    """Run the quality gate, write the quarantine, stop the run if too much is rejected.

    ``phone_region`` (the DAG param) overrides the connection's ``default_phone_region``.
    """
    from associate import staging, validation, warehouse
    from associate.capillary.settings import phone_region_of
    from associate.hook import CapillaryHook
    from associate.tables import QUARANTINE_TABLE

    customers = staging.read_frame(extracted["customers"])
    companies = staging.read_frame(extracted["companies"])
    hook = CapillaryHook(capillary_conn_id=capillary_conn_id)
    # Checked before any call: a mistyped region would otherwise quarantine every national number.
    region = phone_region_of(phone_region, "DAG param 'phone_region'") or hook.settings.default_phone_region
    if region:
        log.info("Mobiles without a country code are read as numbers of region %s", region)
    else:
        log.info("No default phone region: mobiles without a country code are quarantined")
    with hook.get_conn() as client:
        hierarchies = client.get_hierarchies()
    log.info("Read %d hierarchy definitions from Capillary", len(hierarchies))

    result = validation.validate(
        customers, companies, hierarchies, run_id=run_id,
        data_docs_dir=reports_dir(run_id) / "data_docs", phone_region=region,
    )
    log.info("Quality gate summary:\n%s", validation.format_summary(result))
    if result.data_docs:
        log.info("Data Docs: %s", result.data_docs)
        publish_reports(run_id)  # before the gate decides: a failed gate's Data Docs open too

    # The quarantine is written before the gate decides, so a failed run still tells
    # the data steward which rows were wrong.
    warehouse.ensure_output_tables(warehouse_conn_id)
    warehouse.replace_run_rows(warehouse_conn_id, QUARANTINE_TABLE, run_id, result.quarantine)
    validation.check_gate(result, max_quarantine_ratio)

    return {
        "customers": staging.write_frame(result.customers, staging.run_path(run_id, "valid", "customers.parquet")),
        "companies": staging.write_frame(result.companies, staging.run_path(run_id, "valid", "companies.parquet")),
        "summary": staging.write_frame(result.summary, staging.run_path(run_id, "valid", "summary.parquet")),
        "data_docs": str(result.data_docs) if result.data_docs else None,
        "counts": {
            "customers": len(result.customers),
            "companies": len(result.companies),
            "quarantined": len(result.quarantine),
        },
    }


def ensure_companies(
    *, validated: dict[str, Any], warehouse_conn_id: str, capillary_conn_id: str, run_id: str, dry_run: bool
) -> str:
    """Make sure every new or changed fleet company exists in Capillary; stage one outcome per company sent.

    A real run records each company's result and sync state as it is answered; a retry
    sends only what its earlier tries were not answered (their outcomes are carried over).
    """
    from contextlib import nullcontext

    import pandas as pd

    from associate import heap, staging, warehouse
    from associate.company_requests import (
        company_request_hash, company_requests, earlier_try_outcomes, ensure_company_requests,
    )
    from associate.hook import CapillaryHook
    from associate.recording import RecordingThread
    from associate.sending import write_api_time
    from associate.tables import STATUS_FAILED

    companies = staging.read_frame(validated["companies"])
    keys = companies["company_external_id"].astype(str).tolist()
    requests, errors = company_requests(companies)
    # Like customers, a company is only checked when its request changed since its last
    # successful send: thousands of companies would otherwise cost thousands of GETs a run.
    state = warehouse.read_sync_state(warehouse_conn_id, ENTITY_COMPANY, keys=keys)
    sent = state.loc[state["last_status"] != STATUS_FAILED]
    last_hash = dict(zip(sent["entity_key"], sent["payload_hash"]))
    hashes = {key: company_request_hash(request) for key, request in requests.items()}
    unchanged = {key for key in requests if last_hash.get(key) == hashes[key]}
    requests = {key: request for key, request in requests.items() if key not in unchanged}
    # A company the state holds a Capillary id for was created: it is updated (PUT), the
    # others created (POST); one call each, a GET only when an answer is ambiguous.
    known = state.loc[state["capillary_id"].notna()]
    known_ids = {str(key): int(capillary_id) for key, capillary_id in zip(known["entity_key"], known["capillary_id"])}
    log.info("Companies: %d new or changed (%d to create, %d to update, %d that cannot be sent), %d unchanged",
             len(requests) + len(errors), sum(key not in known_ids for key in requests),
             sum(key in known_ids for key in requests), len(errors), len(unchanged))
    uri = staging.run_path(run_id, "outcomes", "companies.parquet")
    if dry_run:
        log.info("Dry run: %d companies would be checked and created or updated", len(requests) + len(errors))
        requests, errors = {}, {}
    hook = CapillaryHook(capillary_conn_id=capillary_conn_id) if requests else None
    if requests or errors:
        warehouse.ensure_output_tables(warehouse_conn_id)
        recording = RecordingThread(warehouse.BatchRecorder(warehouse_conn_id, run_id))
    else:
        recording = nullcontext()
    try:
        # Answers make objects company by company (associate.heap).
        with heap.frozen(), recording as recorder:
            outcomes = ensure_company_requests(hook, requests, errors, known_ids, recorder=recorder, hashes=hashes)
        if not dry_run:
            earlier = earlier_try_outcomes(sent, unchanged, run_id)
            if len(earlier):
                log.info("%d companies were answered in an earlier try of this run: their outcomes are kept",
                         len(earlier))
                outcomes = pd.concat([earlier, outcomes], ignore_index=True)
            write_api_time(hook.get_conn() if hook is not None else None, run_id, "ensure_companies")
        return staging.write_frame(outcomes, uri)
    finally:
        if hook is not None:
            hook.close()


def detect_changes(
    *,
    validated: dict[str, Any],
    company_outcomes: str,
    warehouse_conn_id: str,
    run_id: str,
    customer_keys: list[str] | None,
    dry_run: bool,
    batch_size: int | None = None,
) -> str:
    """Build every payload and keep the customers whose payload changed (or whose last send failed).

    With ``batch_size`` (``build_batches``'), a real run that will send about every customer
    builds them in send order (``payload.send_order``): its chunks are then ranges of the staged
    elements, not copies (~5 s of a million customers' build_batches).
    """
    import json
    import time

    import numpy as np
    import pandas as pd

    from associate import changes, chunking, payload, staged, staging, warehouse
    from associate.tables import METHOD_REGISTER, METHOD_UPDATE, STATE_ASSOCIATION, STATUS_FAILED

    customers = staging.read_frame(validated["customers"])
    companies = staging.read_frame(validated["companies"])
    company_outcomes_df = staging.read_frame(company_outcomes)

    # Customers of a company Capillary refused cannot be associated: they get a failed
    # outcome of their own instead of being sent to fail again one by one.
    failed_companies = set(
        company_outcomes_df.loc[company_outcomes_df["status"] == STATUS_FAILED, "entity_key"]
    )
    blocked = customers["company_external_id"].isin(failed_companies)
    customers_of_failed = _held_back_outcomes(customers.loc[blocked], company_outcomes_df)
    customers = customers.loc[~blocked]
    state = warehouse.read_sync_state(
        warehouse_conn_id, ENTITY_CUSTOMER, keys=customers["customer_key"].astype(str).tolist()
    )[["entity_key", "payload_hash", "last_status", "capillary_id", *STATE_ASSOCIATION]]
    selector = changes.ChangeSelector(state, customer_keys=customer_keys or None)
    del state
    chunks, hierarchy = _send_order(customers, selector, int(batch_size)) if batch_size and not dry_run else (None, None)
    order = np.concatenate(chunks) if chunks else None
    in_chunks = order is not None  # every row built is sent: the staged rows are the chunks as laid out

    # Payloads are built, compared and staged a slice at a time: memory follows the
    # slice, and the log shows progress on a large warehouse.
    stats = {"built": 0, "to_send": 0, "unchanged": 0, "held_back": 0, "association_blocked": 0,
             "register": 0, "update": 0, "dry_run": bool(dry_run)}
    skipped: list[tuple[str, str]] = []
    blocked: list[pd.DataFrame] = []
    to_send_uri = staging.run_path(run_id, "changes", "to_send.parquet")
    # A dry run stages nothing to send (so nothing is sent): its payloads go to a file of
    # their own, and the report folder gets a preview a person can read.
    preview = _dry_run_preview(run_id) if dry_run else None
    started, done = time.monotonic(), 0
    with staging.FrameWriter(to_send_uri, staged.TO_SEND.empty()) as sink, _preview_file(preview) as preview_out:
        for elements in payload.iter_elements(customers, companies, order=order, hierarchy=hierarchy):
            left_out = elements.attrs.pop("skipped")
            skipped += left_out
            selected = selector.select(elements)
            stats["built"] += len(elements)
            stats["to_send"] += len(selected.to_send)
            stats["unchanged"] += len(selected.unchanged)
            stats["register"] += int((selected.to_send["method"] == METHOD_REGISTER).sum())
            stats["update"] += int((selected.to_send["method"] == METHOD_UPDATE).sum())
            if len(selected.blocked):
                blocked.append(selected.blocked)
            in_chunks = in_chunks and not left_out and len(selected.to_send) == len(elements)
            if preview_out is None:
                sink.write(selected.to_send)
            else:
                preview_out.add(selected.to_send)
            done += len(elements) + len(left_out)
            if len(customers) > payload.SLICE_ROWS:
                elapsed = time.monotonic() - started
                log.info("Payloads: %d of %d customers built (%d to send), %.0f rows/s",
                         done, len(customers), stats["to_send"], done / max(elapsed, 1e-9))
        if in_chunks:
            bounds = np.cumsum([0, *(len(rows) for rows in chunks)]).tolist()
            sink.metadata[chunking.CHUNK_RANGES_KEY] = json.dumps([list(pair) for pair in zip(bounds, bounds[1:])])
    selector.missing_keys()

    # Rows the payload builder could not map get a failed outcome with the reason, too:
    # every valid row ends with exactly one outcome.
    if skipped:
        log.warning("%d customer(s) left out of the payloads, e.g. %s: %s", len(skipped), *skipped[0])
    moves = _association_outcomes(blocked)
    stats["association_blocked"] = len(moves)
    if len(moves):
        log.warning("%d registered customer(s) held back: their hierarchy, role or company would move, "
                    "which Capillary refuses (1626/1627/1628), e.g. %s: %s",
                    len(moves), moves["entity_key"].iloc[0], moves["error_message"].iloc[0])
    held = pd.concat([customers_of_failed, payload.skipped_outcomes(skipped), moves], ignore_index=True)
    stats["held_back"] = len(held)
    staging.write_frame(held, staging.run_path(run_id, "outcomes", "held_back.parquet"))
    log.info(
        "Change detection: %(built)d payloads, %(to_send)d to send (%(register)d to register, "
        "%(update)d to update), %(unchanged)d unchanged, %(held_back)d held back (company failed, "
        "payload not built, or association cannot move: %(association_blocked)d)", stats,
    )
    if dry_run:
        stats["preview"], stats["preview_payloads"] = str(preview.path), preview.staged_uri
        log.info("Dry run: nothing sent. Preview (counts and %d of the %d payloads to send, masked): %s; "
                 "every payload: %s", len(preview.sample.samples), stats["to_send"], preview.path,
                 preview.staged_uri)
        publish_reports(run_id)  # the preview opens from the run's Report tab, whichever worker wrote it
    staging.write_json(stats, staging.run_path(run_id, "plan.json"))
    return sink.uri


def _send_order(customers, selector, batch_size: int):
    """The customers' chunks in send order and their hierarchy (``payload.send_order``), or Nones where it would not pay."""
    from associate import payload
    from associate.chunking import MAX_CHUNKS, chunk_count

    chunks = chunk_count(len(customers), batch_size, MAX_CHUNKS)
    registered, sure = selector.before_payloads(customers["customer_key"])
    # Unchanged customers drop out, and a layout of fewer chunks is copied anyway: ordering
    # pays only when the customers sent whatever their payloads fill as many chunks.
    if chunk_count(sure, batch_size, MAX_CHUNKS) != chunks:
        return None, None
    hierarchy = payload.customer_hierarchy(customers)
    return payload.send_order(customers, hierarchy[1], registered, chunks), hierarchy


def _association_outcomes(blocked: list):
    """Failed outcomes (1626/1627/1628, with the reason) for customers whose association would move."""
    from associate.reconcile import not_sent_outcomes

    if not blocked:
        return not_sent_outcomes([], [])
    import pandas as pd

    frame = pd.concat(blocked, ignore_index=True)
    return not_sent_outcomes(frame["entity_key"].astype(str).tolist(), frame["reason"].tolist(),
                             codes=[int(code) for code in frame["error_code"]])


def _dry_run_preview(run_id: str):
    """The preview of a dry run: ``payload_preview.json`` next to the report, every payload staged."""
    from associate import staging
    from associate.preview import STAGED_NAME, DryRunPreview

    return DryRunPreview(reports_dir(run_id), staging.run_path(run_id, "changes", STAGED_NAME))


def _preview_file(preview):
    """The dry run's preview, to enter with the staged writer (or nothing, on a real run)."""
    from contextlib import nullcontext

    return preview if preview is not None else nullcontext()


def build_batches(*, changes: str, run_id: str, batch_size: int, max_chunks: int | None = None) -> list[dict[str, Any]]:
    """Stage the customers to send as chunks of batches, one chunk per mapped ``post`` task (its keyword arguments)."""
    from associate import staging
    from associate.chunking import MAX_CHUNKS, chunk_count, stage_chunks

    rows = staging.footer(changes).rows
    if not rows:
        return []
    batch_size = int(batch_size)
    chunks = chunk_count(rows, batch_size, max_chunks or MAX_CHUNKS)
    staged_chunks = stage_chunks(changes, run_id=run_id, batch_size=batch_size, max_chunks=chunks)
    return [
        {"payload_uri": uri, "outcome_uri": str(staging.run_path(run_id, "outcomes", f"chunk-{n:04d}.parquet")),
         **({"rows": span, "batch_size": batch_size} if span is not None else {})}
        for n, (uri, span) in enumerate(staged_chunks)
    ]


def _held_back_outcomes(customers, company_outcomes):
    """Failed outcomes for customers whose company could not be ensured."""
    from associate.reconcile import not_sent_outcomes

    reasons = dict(zip(company_outcomes["entity_key"], company_outcomes["error_message"]))
    return not_sent_outcomes(
        customers["customer_key"].astype(str).tolist(),
        [
            f"not sent: fleet company {company} could not be created in Capillary ({reasons.get(company) or 'see its result'})"
            for company in customers["company_external_id"]
        ],
    )


def write_back(
    *,
    run_id: str,
    warehouse_conn_id: str,
    company_outcomes: str,
    customer_outcomes: list[str] | None,
) -> dict[str, Any]:
    """Write the outcomes and warnings not recorded as they were answered to the warehouse, and their sync state.

    ``ensure_companies`` and ``post`` record outcomes as they are answered
    (``staged.RECORDED`` marks those rows); what is left is held-back customers and
    customers whose batch was not recorded (no warehouse connection on ``post``). Rows are
    replaced by key, so a retry writes the same rows again and the run keeps one result
    per entity.
    """
    import pandas as pd

    from associate import reconcile, staged, warehouse
    from associate.run_outcomes import all_values, run_outcomes
    from associate.tables import RESULTS_TABLE, WARNINGS_TABLE

    # One row per entity first: a key held back and also sent keeps its sent row, recorded or not.
    others = run_outcomes(run_id, company_outcomes, [])
    chunk_uris = [uri for uri in all_values(customer_outcomes) if uri]
    outcomes = reconcile.with_recorded_chunk_keys(others, chunk_uris)
    if outcomes is None:  # read every chunk whole
        outcomes = reconcile.combine_outcomes([*others, *chunk_uris])
    recorded = (outcomes[staged.RECORDED].eq(True) if staged.RECORDED in outcomes.columns
                else pd.Series(False, index=outcomes.index))
    unrecorded = outcomes.loc[~recorded]
    results, warnings, state = reconcile.records_from_outcomes(unrecorded, run_id)
    warehouse.ensure_output_tables(warehouse_conn_id)
    if not recorded.any():
        # Nothing recorded (post ran without a warehouse, or sent nothing): the run's rows
        # are these, written whole, which also clears what an earlier try of the run left.
        warehouse.replace_run_rows(warehouse_conn_id, RESULTS_TABLE, run_id, results)
        warehouse.replace_run_rows(warehouse_conn_id, WARNINGS_TABLE, run_id, warnings)
        warehouse.upsert_sync_state(warehouse_conn_id, state)
    else:
        warehouse.record_batch(warehouse_conn_id, run_id, results=results, warnings=warnings, state=state)
        warehouse.drop_stale_run_rows(warehouse_conn_id, run_id, outcomes[["entity", "entity_key"]])
    log.info("Wrote %d results and %d warnings for run %s (held-back customers and outcomes not recorded as they "
             "were answered); %d results were recorded as answered by ensure_companies and post",
             len(results), len(warnings), run_id, int(recorded.sum()))
    return {"results": len(results), "warnings": len(warnings), "recorded_as_answered": int(recorded.sum())}
