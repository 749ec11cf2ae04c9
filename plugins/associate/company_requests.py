"""Warehouse company rows -> ``POST /v2/companies`` requests, their hashes, and company outcome rows."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from associate import staged
from associate.masking import PiiMaskingFilter
from associate.tables import ENTITY_COMPANY

if TYPE_CHECKING:
    import pandas as pd

    from associate.hook import CapillaryHook
    from associate.recording import RecordingThread

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())

# Answered companies are framed (and handed over for recording) in groups of at most this
# many, or of those answered within RECORD_GROUP_SECONDS of the last group.
RECORD_GROUP_COMPANIES = 1000
RECORD_GROUP_SECONDS = 1.0
# ``action`` of a company an earlier try of the run was answered for (recorded then, not sent again).
ACTION_EARLIER_TRY = "answered in an earlier try"


def company_request(row: Any) -> dict[str, Any]:
    """Return the ``POST /v2/companies`` body of one warehouse company row."""
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
    """Return the hash of a company's request body: what the sync state compares to find changed companies."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def company_requests(companies: pd.DataFrame) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each company row's request by external id (a key's last row), and why the rest could not be built."""
    requests: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for row in companies.to_dict("records"):
        key = str(row.get("company_external_id"))
        try:
            requests[key] = company_request(row)
            errors.pop(key, None)
        except ValueError as exc:
            errors[key] = str(exc)
            requests.pop(key, None)
    return requests, errors


def ensure_companies_from_frame(hook: CapillaryHook | None, companies: pd.DataFrame,
                                known_ids: Mapping[str, int | None] | None = None) -> pd.DataFrame:
    """Ensure every company of a (validated) companies frame exists; return company outcome rows.

    ``known_ids`` ({external id: Capillary id}) names the companies the sync state says were created.
    """
    if companies.empty:
        return staged.COMPANY_OUTCOMES.empty()
    return ensure_company_requests(hook, *company_requests(companies), known_ids)


def ensure_company_requests(hook: CapillaryHook | None, requests: Mapping[str, dict[str, Any]],
                            errors: Mapping[str, str], known_ids: Mapping[str, int | None] | None = None, *,
                            recorder: RecordingThread | None = None,
                            hashes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Send company requests (by external id; ``errors``: those not built, and why); return outcome rows.

    With a ``recorder``, outcomes are handed over for recording as they are answered, in
    groups (marked ``staged.RECORDED``): a task killed midway keeps what it was answered.
    ``hashes`` are the requests' hashes where the caller has them already. Rows come in the
    order of ``errors``, then ``requests``.
    """
    import numpy as np
    import pandas as pd

    from associate.capillary.outcomes import FAILED, CompanyOutcome

    if not requests and not errors:
        return staged.COMPANY_OUTCOMES.empty()
    if hook is None and requests:
        raise ValueError("a hook is needed to ensure companies")
    now = pd.Timestamp.now(tz="UTC")
    groups: list[pd.DataFrame] = []
    waiting: list[CompanyOutcome] = []
    flushed_at = time.monotonic()

    def flush() -> None:
        nonlocal flushed_at
        flushed_at = time.monotonic()
        if not waiting:
            return
        frame = _outcome_rows(waiting, requests, hashes or {}, now)
        waiting.clear()
        if recorder is not None:
            frame[staged.RECORDED] = True
            recorder.put([frame])  # from here on the recording thread reads the frame
        groups.append(frame)

    def answered(outcome: CompanyOutcome) -> None:
        waiting.append(outcome)
        if len(waiting) >= RECORD_GROUP_COMPANIES or time.monotonic() - flushed_at >= RECORD_GROUP_SECONDS:
            flush()

    for key, reason in errors.items():
        waiting.append(CompanyOutcome(key, FAILED, error_message=f"company not sent: {reason}"))
    flush()
    if requests:
        hook.get_conn().ensure_companies(requests.values(), known_ids=known_ids, answered=answered)
    flush()
    frame = pd.concat(groups, ignore_index=True)
    order = {key: n for n, key in enumerate([*errors, *requests])}
    frame = frame.iloc[np.argsort(frame["entity_key"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)
    log.info("Companies: %s", staged.format_counts(frame["action"]))
    return frame


def _outcome_rows(outcomes: list, requests: Mapping[str, dict[str, Any]], hashes: Mapping[str, str],
                  now: Any) -> pd.DataFrame:
    """Company outcome rows (with ``action``, a column the outcome format allows) of some outcomes."""
    import pandas as pd

    def request_hash(key: str) -> str | None:
        if key in hashes:
            return hashes[key]
        return company_request_hash(requests[key]) if key in requests else None

    frame = staged.outcome_frame(
        staged.outcome_record(
            ENTITY_COMPANY, outcome.external_id, outcome.status, capillary_id=outcome.company_id,
            error_code=outcome.error_code, error_message=outcome.error_message, attempts=outcome.attempts,
            synced_at=now, warnings=outcome.warnings,
            payload_hash=request_hash(outcome.external_id),
        )
        for outcome in outcomes
    )
    return frame.assign(action=pd.Series([outcome.action for outcome in outcomes], dtype="object"))


def earlier_try_outcomes(state: pd.DataFrame, unchanged: set[str], run_id: str) -> pd.DataFrame:
    """Outcome rows (recorded) of the unchanged companies an earlier try of this run was answered for.

    ``state`` holds the companies' sync-state rows. Their results are in the warehouse
    already; without a row here ``write_back`` would take them for leftovers of another
    input and drop them.
    """
    import pandas as pd

    rows = state.loc[state["entity_key"].astype(str).isin(unchanged) & state["last_run_id"].astype(str).eq(run_id)]
    frame = staged.outcome_frame(
        staged.outcome_record(ENTITY_COMPANY, key, status, capillary_id=capillary_id, synced_at=synced_at,
                              payload_hash=payload_hash)
        for key, status, capillary_id, synced_at, payload_hash in zip(
            rows["entity_key"], rows["last_status"], rows["capillary_id"], rows["last_synced_at"],
            rows["payload_hash"])
    )
    return frame.assign(action=pd.Series([ACTION_EARLIER_TRY] * len(frame), dtype="object"),
                        **{staged.RECORDED: True})
