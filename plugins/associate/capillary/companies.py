"""Fleet companies: create or update each one, holding companies before their subsidiaries.

GET by externalId, POST when missing (``1704``), PUT when name or extendedFields differ.
A POST answered "already exists" (``1702``) means an earlier POST was stored but its
answer lost: the company is then reconciled as an existing one. Decided by code, whatever
the HTTP status (400, 404, 500, or 200 with ``errors``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from associate.capillary import endpoints
from associate.capillary.outcomes import (
    CREATED, FAILED, UNCHANGED, UPDATED, CompanyOutcome, int_or_none, messages,
)
from associate.capillary.transport import Transport
from associate.exceptions import CapillaryAuthError, CapillaryError
from associate.masking import PiiMaskingFilter
from associate.models import Codes

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())


INACTIVE_WARNING = {"code": Codes.COMPANY_INACTIVE,
                    "message": "Fleet company is inactive in Capillary: customers cannot be associated with it"}


def _parent_of(request: Mapping[str, Any]) -> str | None:
    return (request.get("parentCompany") or {}).get("externalId")


class CompanyEnsurer:
    """Makes Capillary's fleet companies match their requests."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def ensure(self, companies: Iterable[Mapping[str, Any]]) -> list[CompanyOutcome]:
        """Create or update fleet companies, holding companies first; return one outcome per company."""
        requests_by_id: dict[str, dict[str, Any]] = {}
        for company in companies:
            request = {k: v for k, v in dict(company).items() if v is not None}
            external_id = str(request.get("externalId") or "")
            if not external_id:
                raise ValueError("every company needs an externalId (validation should have quarantined it)")
            if external_id in requests_by_id:
                log.warning("Company %s appears twice in the input; ensuring its first row only", external_id)
                continue
            requests_by_id[external_id] = request
        ordered, outcomes = parents_first(requests_by_id)
        for external_id in ordered:
            parent = _parent_of(requests_by_id[external_id])
            if parent in outcomes and outcomes[parent].action == FAILED:
                outcomes[external_id] = CompanyOutcome(
                    external_id, FAILED, error_message=f"holding company {parent} could not be ensured"
                )
                continue
            outcomes[external_id] = self._ensure_one(requests_by_id[external_id])
        return [outcomes[key] for key in requests_by_id]

    def _ensure_one(self, request: dict[str, Any]) -> CompanyOutcome:
        external_id = request["externalId"]
        by_id = {"externalId": external_id}
        outcome = CompanyOutcome(external_id, FAILED)
        try:
            existing = self._call(outcome, "GET", params=by_id, tolerate=(Codes.COMPANY_NOT_FOUND,))
            if existing is None:
                created = self._call(outcome, "POST", json_body=request, tolerate=(Codes.COMPANY_EXISTS,))
                if created is not None:
                    outcome.action, outcome.company_id = CREATED, int_or_none(created.get("companyId"))
                    outcome.warnings = messages(created.get("warnings"))
                    return outcome
                existing = self._call(outcome, "GET", params=by_id)
            outcome.company_id = int_or_none(existing.get("companyId"))
            stored_code = existing.get("hierarchyDefinitionCode")
            if stored_code and stored_code != request.get("hierarchyDefinitionCode"):
                outcome.error_code = Codes.HIERARCHY_UPDATE_NOT_ALLOWED
                outcome.error_message = (
                    f"company is in hierarchy {stored_code} in Capillary, not {request.get('hierarchyDefinitionCode')}; "
                    "a company's hierarchy cannot change"
                )
                return outcome
            # A deleted company stays, inactive: every customer sent to it would be refused (1705).
            inactive = [INACTIVE_WARNING] if existing.get("isActive") is False else []
            if existing.get("name") == request.get("name") and (existing.get("extendedFields") or {}) == (
                request.get("extendedFields") or {}
            ):
                outcome.action, outcome.warnings = UNCHANGED, inactive
                return outcome
            # parentCompany cannot be changed by PUT in the contract, so it is not sent.
            update = {k: v for k, v in request.items() if k != "parentCompany"}
            updated = self._call(outcome, "PUT", params=by_id, json_body=update)
            outcome.action = UPDATED
            outcome.warnings = inactive + messages((updated or {}).get("warnings"))
            return outcome
        except CapillaryAuthError:
            raise
        except CapillaryError as exc:
            outcome.action, outcome.error_code, outcome.error_message = FAILED, exc.code, str(exc)
            return outcome

    def _call(self, outcome: CompanyOutcome, method: str, *, params=None, json_body=None,
              tolerate: Collection[int] = ()) -> Any:
        """Send one company call, its attempts added to the outcome; return the body (None when tolerated)."""
        answer = self.transport.send(method, endpoints.COMPANIES, params=params, json_body=json_body)
        outcome.attempts += answer.attempts
        return answer.expect(f"{method} company {outcome.external_id}", tolerate=tolerate)


def parents_first(requests_by_id: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], dict[str, CompanyOutcome]]:
    """Return the companies ordered so a holding company comes before its subsidiaries, and failed outcomes of cycles."""
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(external_id: str, path: tuple[str, ...]) -> bool:
        if state.get(external_id) == "done":
            return True
        if external_id in path:
            return False
        parent = _parent_of(requests_by_id[external_id])
        if parent in requests_by_id and not visit(parent, path + (external_id,)):
            state[external_id] = "cycle"
            return False
        state[external_id] = "done"
        ordered.append(external_id)
        return True

    for external_id in requests_by_id:
        visit(external_id, ())
    cycles = {
        external_id: CompanyOutcome(external_id, FAILED, error_message="parentCompany chain forms a cycle")
        for external_id in requests_by_id if state.get(external_id) != "done"
    }
    return ordered, cycles
