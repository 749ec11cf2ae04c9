"""Operators that send staged payloads to Capillary and stage what happened.

The staged formats are described in docs/capillary-client.md: a payload chunk in,
one outcome row per customer (or company) out. pandas and requests are imported inside
functions: DAG files import this module at parse time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from associate.masking import PiiMaskingFilter, mask_text

if TYPE_CHECKING:
    import pandas as pd

    from associate.hook import CapillaryHook

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())

ENTITY_CUSTOMER, ENTITY_COMPANY = "customer", "company"
PAYLOAD_COLUMNS = ("batch_no", "entity_key", "payload", "payload_hash", "child_keys")
OUTCOME_COLUMNS = (
    "entity", "entity_key", "status", "capillary_id", "error_code", "error_message",
    "attempts", "synced_at", "payload_hash", "warnings",
)


class AssociateCustomersOperator(BaseOperator):
    """Send one staged payload chunk to Capillary, batch by batch, and stage one outcome row per customer."""

    template_fields: Sequence[str] = ("payload_uri", "outcome_uri", "capillary_conn_id", "warehouse_conn_id")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        payload_uri: str,
        outcome_uri: str,
        capillary_conn_id: str = "capillary_default",
        warehouse_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.payload_uri = payload_uri
        self.outcome_uri = outcome_uri
        self.capillary_conn_id = capillary_conn_id
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Any) -> str:
        from associate.hook import CapillaryHook

        hook = CapillaryHook(capillary_conn_id=self.capillary_conn_id)
        try:
            return send_payload_chunk(
                hook, self.payload_uri, self.outcome_uri,
                run_id=str(context.get("run_id") or "manual"), warehouse_conn_id=self.warehouse_conn_id,
            )
        finally:
            hook.close()


# --- sending a chunk ------------------------------------------------------------------------


def _record_batch(warehouse_conn_id: str, run_id: str, outcome: pd.DataFrame) -> None:
    """Write one batch's results, warnings and sync state to the warehouse (one transaction)."""
    from associate.reconcile import results_from_outcomes, state_from_outcomes
    from associate.warehouse import record_batch

    results, warnings = results_from_outcomes(outcome, run_id)
    record_batch(warehouse_conn_id, run_id, results=results, warnings=warnings,
                 state=state_from_outcomes(outcome, run_id))


def part_uri(outcome_uri: str, batch_no: int) -> str:
    """Where the outcome of one batch is kept until the chunk is done (resume after a retry)."""
    return f"{outcome_uri}.parts/batch-{int(batch_no):05d}.parquet"


def send_payload_chunk(
    hook: CapillaryHook,
    payload_uri: str,
    outcome_uri: str,
    *,
    run_id: str,
    warehouse_conn_id: str | None = None,
) -> str:
    """Send a payload chunk batch by batch (ascending ``batch_no``), stage the outcome, answer its URI."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    from associate import staging

    frame = staging.read_frame(payload_uri)
    missing = [c for c in PAYLOAD_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"payload chunk {payload_uri} lacks columns {missing}")
    batches = [(int(no), group) for no, group in frame.groupby("batch_no", sort=True)]
    done = [no for no, _ in batches if staging.exists(part_uri(outcome_uri, no))]
    pending = [(no, group) for no, group in batches if no not in set(done)]
    if done:
        log.info("Resuming: %d of %d batches already have an outcome from an earlier try", len(done), len(batches))

    if warehouse_conn_id and pending:
        from associate.warehouse import ensure_output_tables

        ensure_output_tables(warehouse_conn_id)
    progress = _Progress(total=len(batches), done=len(done), hook=hook)
    fresh: dict[int, pd.DataFrame] = {}
    with ThreadPoolExecutor(max_workers=hook.settings.concurrency, thread_name_prefix="capillary") as pool:
        for wave in _independent_waves(pending):
            # Batches of one wave share no customer, so they may travel side by side;
            # their outcomes are recorded in batch order.
            futures = [(no, pool.submit(_send_batch, hook, group)) for no, group in wave]
            for no, future in futures:
                outcome = fresh[no] = future.result()
                staging.write_frame(outcome, part_uri(outcome_uri, no))
                if warehouse_conn_id:
                    _record_batch(warehouse_conn_id, run_id, outcome)
                progress.batch_done(no, outcome)

    parts = [fresh[no] if no in fresh else staging.read_frame(part_uri(outcome_uri, no)) for no, _ in batches]
    combined = pd.concat(parts, ignore_index=True) if parts else empty_outcomes()
    uri = staging.write_frame(_typed(combined), outcome_uri)
    counts = combined["status"].value_counts().to_dict() if len(combined) else {}
    log.info("Chunk done: %d customers (%s); outcome %s", len(combined), _format_counts(counts), uri)
    return uri


class _Progress:
    """One log line per batch: done/total, customers/s, 429s, retries."""

    def __init__(self, *, total: int, done: int, hook: CapillaryHook):
        self.total, self.done, self.hook = total, done, hook
        self.customers = 0
        self.started = time.monotonic()

    def batch_done(self, batch_no: int, outcome: pd.DataFrame) -> None:
        self.done += 1
        self.customers += len(outcome)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        stats = self.hook.stats.snapshot()
        failed = int((outcome["status"] == "failed").sum())
        log.info(
            "Batch %d/%d (batch_no %d): %d customers, %d failed; %.1f customers/s; 429s %d, retries %d",
            self.done, self.total, batch_no, len(outcome), failed, self.customers / elapsed,
            stats["throttled"], stats["retries"],
        )


def _identifiers(element: Any) -> set[tuple[str, str]]:
    """Every (type, value) identifier an element touches: its own, its parent's, its children's."""
    found: set[tuple[str, str]] = set()

    def profiles(customer: Any) -> None:
        for profile in (customer or {}).get("profiles") or []:
            for ident in profile.get("identifiers") or []:
                found.add((str(ident.get("type")), str(ident.get("value"))))

    if isinstance(element, dict):
        profiles(element)
        details = element.get("associationDetails") or {}
        profiles(details.get("parentCustomer"))
        for child in details.get("childCustomers") or []:
            profiles(child)
    return found


def _independent_waves(batches: list[tuple[int, Any]]) -> list[list[tuple[int, Any]]]:
    """Consecutive batches grouped while they share no customer; a shared one starts a new wave.

    A child's batch names its parent's identifiers, so parents are always answered before
    their children are sent, and two requests never race to register the same customer.
    """
    waves: list[list[tuple[int, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for no, group in batches:
        touched: set[tuple[str, str]] = set()
        for payload in group["payload"]:
            try:
                touched |= _identifiers(json.loads(payload))
            except (TypeError, ValueError):
                continue
        if not waves or touched & seen:
            waves.append([])
            seen = set()
        waves[-1].append((no, group))
        seen |= touched
    return waves


def _send_batch(hook: CapillaryHook, group: pd.DataFrame) -> pd.DataFrame:
    """Send one batch; answer its outcome rows (main customer, then children, per element)."""
    import pandas as pd

    from associate.capillary.outcomes import BulkOutcome, CustomerOutcome

    rows = list(group[["entity_key", "payload", "payload_hash", "child_keys"]].itertuples(index=False))
    elements, sendable, results = [], [], {}
    for position, row in enumerate(rows):
        try:
            element = json.loads(row.payload)
            if not isinstance(element, dict):
                raise ValueError("payload is not a JSON object")
        except (TypeError, ValueError) as exc:
            results[position] = BulkOutcome(error_message=f"payload is not valid JSON: {exc}")
            continue
        elements.append(element)
        sendable.append(position)
    for position, outcome in zip(sendable, hook.get_conn().post_customers_bulk(elements) if elements else []):
        results[position] = outcome

    now = pd.Timestamp.now(tz="UTC")
    records = []
    for position, row in enumerate(rows):
        outcome = results[position]
        records.append(_record(row.entity_key, outcome, outcome.attempts, now, row.payload_hash))
        for j, child_key in enumerate(_child_keys(row.child_keys)):
            if j < len(outcome.children):
                child = outcome.children[j]
            else:
                child = CustomerOutcome(
                    error_code=outcome.error_code,
                    error_message=outcome.error_message if outcome.status == "failed"
                    else "Capillary answered no result for this child",
                )
            # A child's own payload hash belongs to its own element; here it has none.
            records.append(_record(child_key, child, outcome.attempts, now, None))
    for record in records:
        if record["status"] == "failed":
            log.warning("Customer %s failed: %s %s", record["entity_key"], record["error_code"], record["error_message"])
    return _typed(pd.DataFrame.from_records(records, columns=list(OUTCOME_COLUMNS)))


def _child_keys(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    keys = json.loads(value) if isinstance(value, str) else list(value)
    return [str(k) for k in keys]


def _record(entity_key: str, outcome: Any, attempts: int, now: Any, payload_hash: str | None,
            entity: str = ENTITY_CUSTOMER) -> dict[str, Any]:
    return {
        "entity": entity,
        "entity_key": str(entity_key),
        "status": outcome.status,
        "capillary_id": getattr(outcome, "capillary_id", None) if outcome.status != "failed" else None,
        "error_code": outcome.error_code,
        "error_message": mask_text(outcome.error_message) if outcome.error_message else None,
        "attempts": int(attempts),
        "synced_at": now,
        "payload_hash": payload_hash,
        "warnings": json.dumps([{"code": w.get("code"), "message": mask_text(w.get("message"))}
                                for w in outcome.warnings], ensure_ascii=False),
    }


def empty_outcomes() -> pd.DataFrame:
    """An outcome frame with no rows and the contract's columns and types."""
    import pandas as pd

    return _typed(pd.DataFrame({c: [] for c in OUTCOME_COLUMNS}))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The outcome contract's dtypes (nullable ids and codes, UTC timestamps)."""
    import pandas as pd

    frame = frame.copy()
    for column in ("capillary_id", "error_code"):
        frame[column] = pd.array([None if pd.isna(v) else int(v) for v in frame[column]], dtype="Int64")
    frame["attempts"] = frame["attempts"].astype("int64")
    frame["synced_at"] = pd.to_datetime(frame["synced_at"], utc=True)
    for column in ("entity", "entity_key", "status", "error_message", "payload_hash", "warnings"):
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    return frame


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing sent"


# --- companies --------------------------------------------------------------------------------


def company_request(row: Any) -> dict[str, Any]:
    """The ``POST /v2/companies`` body of one warehouse company row."""
    import pandas as pd

    def clean(value: Any) -> Any:
        return None if value is None or (not isinstance(value, (dict, list)) and pd.isna(value)) else value

    fields = clean(row.get("extended_fields"))
    if isinstance(fields, str):
        fields = json.loads(fields)
        if not isinstance(fields, dict):
            raise ValueError("extended_fields must be a JSON object")
    request = {
        "name": clean(row.get("company_name")),
        "externalId": str(row.get("company_external_id")),
        "hierarchyDefinitionCode": clean(row.get("hierarchy_code")),
        "extendedFields": fields or None,
    }
    parent = clean(row.get("parent_company_external_id"))
    if parent:
        request["parentCompany"] = {"externalId": str(parent)}
    return {k: v for k, v in request.items() if v is not None}


def company_request_hash(request: dict[str, Any] | None) -> str:
    """Hash of a company's request body: what the sync state compares to find changed companies."""
    import hashlib

    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def ensure_companies_from_frame(hook: CapillaryHook | None, companies: pd.DataFrame) -> pd.DataFrame:
    """Ensure every company of a (validated) companies frame exists; answer outcome rows (entity "company")."""
    import pandas as pd

    if companies.empty:
        return _with_action(empty_outcomes(), [])
    if hook is None:
        raise ValueError("a hook is needed to ensure companies")
    now = pd.Timestamp.now(tz="UTC")
    requests_by_key: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    actions: list[str] = []
    for row in companies.to_dict("records"):
        key = str(row.get("company_external_id"))
        try:
            requests_by_key[key] = company_request(row)
        except ValueError as exc:
            from associate.capillary.outcomes import CompanyOutcome

            bad = CompanyOutcome(key, "failed", error_message=f"company not sent: {exc}")
            records.append(_company_record(bad, now, None))
            actions.append(bad.action)
    for outcome in hook.get_conn().ensure_companies(requests_by_key.values()):
        records.append(_company_record(outcome, now, company_request_hash(requests_by_key.get(outcome.external_id))))
        actions.append(outcome.action)
    frame = _typed(pd.DataFrame.from_records(records, columns=list(OUTCOME_COLUMNS)))
    counts = pd.Series(actions).value_counts().to_dict()
    log.info("Companies: %s", _format_counts(counts))
    return _with_action(frame, actions)


def _company_record(outcome: Any, now: Any, payload_hash: str | None) -> dict[str, Any]:
    record = _record(outcome.external_id, outcome, outcome.attempts, now, payload_hash, entity=ENTITY_COMPANY)
    record["capillary_id"] = outcome.company_id if outcome.status != "failed" else None
    return record


def _with_action(frame: pd.DataFrame, actions: list[str]) -> pd.DataFrame:
    """Add ``action`` (created/updated/unchanged/failed): an extra column the contract allows."""
    import pandas as pd

    frame = frame.copy()
    frame["action"] = pd.Series(actions, dtype="object")
    return frame
