"""Warehouse company rows -> ``POST /v2/companies`` requests, their hashes, and company outcome rows."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from associate import staged
from associate.masking import PiiMaskingFilter
from associate.tables import ENTITY_COMPANY

if TYPE_CHECKING:
    import pandas as pd

    from associate.hook import CapillaryHook

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())


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


def ensure_companies_from_frame(hook: CapillaryHook | None, companies: pd.DataFrame,
                                known_ids: Mapping[str, int | None] | None = None) -> pd.DataFrame:
    """Ensure every company of a (validated) companies frame exists; return company outcome rows.

    ``known_ids`` ({external id: Capillary id}) names the companies the sync state says were created.
    """
    import pandas as pd

    from associate.capillary.outcomes import FAILED, CompanyOutcome

    if companies.empty:
        return staged.COMPANY_OUTCOMES.empty()
    if hook is None:
        raise ValueError("a hook is needed to ensure companies")
    now = pd.Timestamp.now(tz="UTC")
    requests_by_key: dict[str, dict[str, Any]] = {}
    outcomes: list[tuple[CompanyOutcome, str | None]] = []
    for row in companies.to_dict("records"):
        key = str(row.get("company_external_id"))
        try:
            requests_by_key[key] = company_request(row)
        except ValueError as exc:
            outcomes.append((CompanyOutcome(key, FAILED, error_message=f"company not sent: {exc}"), None))
    for outcome in hook.get_conn().ensure_companies(requests_by_key.values(), known_ids=known_ids):
        outcomes.append((outcome, company_request_hash(requests_by_key.get(outcome.external_id))))
    frame = staged.outcome_frame(
        staged.outcome_record(
            ENTITY_COMPANY, outcome.external_id, outcome.status, capillary_id=outcome.company_id,
            error_code=outcome.error_code, error_message=outcome.error_message, attempts=outcome.attempts,
            synced_at=now, payload_hash=payload_hash, warnings=outcome.warnings,
        )
        for outcome, payload_hash in outcomes
    )
    actions = [outcome.action for outcome, _ in outcomes]
    log.info("Companies: %s", staged.format_counts(actions))
    # ``action`` is a column the outcome format allows beyond its own.
    return frame.assign(action=pd.Series(actions, dtype="object"))
