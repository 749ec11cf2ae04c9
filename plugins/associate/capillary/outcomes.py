"""What Capillary answered: the transport's ``CallResult``, its JSON, and customer and company outcomes.

Every body is parsed here (``parse_json``), and every server message that reaches an
outcome or an exception is masked here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from associate import json_codec
from associate.exceptions import CapillaryAuthError, CapillaryError
from associate.masking import mask_text
from associate.models import Codes
from associate.tables import STATUS_FAILED, STATUS_SUCCESS, STATUS_WARNING

if TYPE_CHECKING:
    import requests

# What ensure_companies did with a company.
CREATED, UPDATED, UNCHANGED, FAILED = "created", "updated", "unchanged", "failed"
# Where a bulk answer that is a JSON object may carry its per-element list.
RESULT_KEYS = ("response", "entities", "entity", "data", "results")
DETAILS_KEPT = ("already registered in Capillary with other details; registration does not change them: "
                "the next run sends them as an update")


def parse_json(response: requests.Response | None) -> Any:
    """Return the JSON body of a response, or None when there is none or it is not JSON."""
    if response is None or not response.content:
        return None
    try:
        return json_codec.loads(response.content)
    except ValueError:
        return None


def int_or_none(value: Any) -> int | None:
    """Return ``value`` as an int, or None when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def messages(items: Any) -> list[dict[str, Any]]:
    """Return API messages as ``{code, message}`` with masked text, without repeats and without empty ``{}``."""
    out: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        entry = {"code": int_or_none(item.get("code")), "message": mask_text(item.get("message") or "")}
        # The reference's samples answer "warnings": [{}] and "errors": [{}] for nothing at all.
        if entry["code"] is None and not entry["message"]:
            continue
        if entry not in out:
            out.append(entry)
    return out


def per_element_results(body: Any) -> list[Any] | None:
    """Return a bulk call's per-element list: the body itself, or the list a dict carries (e.g. ``response``)."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in RESULT_KEYS:
            if isinstance(body.get(key), list):
                return body[key]
    return None


def is_all_failed(code: int | None, message: str) -> bool:
    """Whether an error is the documented whole-request ``500`` "All requests failed due to errors"."""
    return code == Codes.ALL_FAILED and "all requests failed" in message.lower()


def carries_answer(response: requests.Response) -> bool:
    """Whether a 5xx is Capillary's answer (not an outage to retry): per-element results or a documented error.

    A code outside 5xx (``1704``, ``400`` ...) is an answer; a code ``500`` is one only with the
    documented "All requests failed" message, since servers also answer ``500`` for an outage.
    """
    body = parse_json(response)
    if per_element_results(body) is not None:
        return True
    errors = messages(body.get("errors")) if isinstance(body, dict) else []
    return any((e["code"] is not None and not 500 <= e["code"] < 600) or is_all_failed(e["code"], e["message"])
               for e in errors)


@dataclass
class CallResult:
    """A response (or the transport error that replaced it) and how many tries it took."""

    response: requests.Response | None
    attempts: int
    failure: str | None = None

    @property
    def status(self) -> int | None:
        """The HTTP status, None when no response came."""
        return self.response.status_code if self.response is not None else None

    @property
    def ok(self) -> bool:
        """Whether the call succeeded: HTTP 2xx and no error in the body (an empty ``{}`` is none)."""
        return self.status is not None and 200 <= self.status < 300 and not self.errors

    @cached_property
    def body(self) -> Any:
        """The JSON body, parsed once."""
        return parse_json(self.response)

    @cached_property
    def errors(self) -> list[dict[str, Any]]:
        """The whole-request errors of the body, ``{code, message}`` masked; empty ones dropped."""
        return messages(self.body.get("errors")) if isinstance(self.body, dict) else []

    @property
    def codes(self) -> set[int]:
        """The codes of the whole-request errors."""
        return {e["code"] for e in self.errors if e["code"] is not None}

    def first_error(self) -> tuple[int | None, str]:
        """Return (code, message) of a whole-request error, masked; the HTTP status when the body has no code."""
        if self.response is None:
            return None, self.failure or "no answer"
        if self.errors:
            first = self.errors[0]
            return first["code"], first["message"]
        return self.status, mask_text(f"HTTP {self.status}: {self.response.text[:200]}")

    def error(self, what: str) -> CapillaryError:
        """Return the exception of a failed call: ``CapillaryAuthError`` for 401/403."""
        code, message = self.first_error()
        kind = CapillaryAuthError if self.status in (401, 403) else CapillaryError
        return kind(f"{what}: {message}", status=self.status, code=code)

    def expect(self, what: str, *, tolerate: Collection[int] = ()) -> Any:
        """Return the body of a successful answer, None when an error's code is in ``tolerate``; else raise.

        Decided by code whatever the HTTP status: a ``1704`` may come as 400, 404, 500 or 200.
        """
        if self.ok:
            return self.body
        if self.status not in (401, 403) and self.codes & set(tolerate):
            return None
        raise self.error(what)


@dataclass
class CustomerOutcome:
    """What happened to one customer (a bulk element's main customer or one of its children)."""

    status: str = STATUS_FAILED
    capillary_id: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BulkOutcome(CustomerOutcome):
    """One bulk element's outcome, its children's (in ``childCustomers`` order) and its attempts.

    ``method`` is the call that gave the outcome (a PUT answered 8015 is re-sent by POST);
    ``details_kept`` says a POST found the customer registered with other names, which
    registration does not change; the child counts are as Capillary answered them.
    """

    index: int = 0
    attempts: int = 0
    method: str = "POST"
    details_kept: bool = False
    children: list[CustomerOutcome] = field(default_factory=list)
    child_count: int | None = None
    child_success_count: int | None = None
    child_failure_count: int | None = None

    def apply(self, result: Any, *, sent: Mapping[str, Any] | None = None, method: str = "POST") -> None:
        """Take the element's result of a per-element answer, compared with the element sent."""
        result = result if isinstance(result, Mapping) else {}
        main = customer_outcome(result, require_id=method != "PUT")
        self.method, self.details_kept = method, False
        if main.status != STATUS_FAILED and sent:
            entity = answered_entity(result)
            difference = association_difference(sent.get("associationDetails"), entity.get("associationDetails"))
            if difference:
                main.warnings.append({"code": None, "message": mask_text(difference)})
            if method == "POST" and names_differ(sent, entity):
                self.details_kept = True
                main.warnings.append({"code": None, "message": DETAILS_KEPT})
            main.status = STATUS_WARNING if main.warnings else STATUS_SUCCESS
        self.status, self.capillary_id = main.status, main.capillary_id
        self.error_code, self.error_message, self.warnings = main.error_code, main.error_message, main.warnings
        self.children = [
            customer_outcome(child) if isinstance(child, Mapping) else CustomerOutcome(error_message="no child result")
            for child in result.get("childEntities") or []
        ]
        self.child_count = int_or_none(result.get("childCount"))
        self.child_success_count = int_or_none(result.get("childSuccessCount"))
        self.child_failure_count = int_or_none(result.get("childFailureCount"))

    def fail(self, code: int | None, message: str, *, method: str | None = None) -> None:
        """Mark the element failed with a whole-request error."""
        self.status, self.capillary_id, self.details_kept = STATUS_FAILED, None, False
        self.error_code, self.error_message = code, mask_text(message)
        self.method = method or self.method


@dataclass
class CompanyOutcome:
    """What ``ensure_companies`` did with one company."""

    external_id: str
    action: str  # CREATED | UPDATED | UNCHANGED | FAILED
    company_id: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    attempts: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The outcome status of the staged format."""
        if self.action == FAILED:
            return STATUS_FAILED
        return STATUS_WARNING if self.warnings else STATUS_SUCCESS


def answered_entity(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """The customer of an answered element: its ``entity``, or the element itself (PUT answers, child entities)."""
    entity = result.get("entity") if "entity" in result else result
    return entity if isinstance(entity, Mapping) else {}


def _answered_id(entity: Mapping[str, Any]) -> int | None:
    """The customer id: ``id``, else a profile's ``userId``."""
    capillary_id = int_or_none(entity.get("id"))
    for profile in entity.get("profiles") or []:
        if capillary_id is None and isinstance(profile, Mapping):
            capillary_id = int_or_none(profile.get("userId"))
    return capillary_id


def customer_outcome(result: Mapping[str, Any], *, require_id: bool = True) -> CustomerOutcome:
    """Map one answered customer (element or child entity) to an outcome.

    A POST answer without a customer id is a failure (nothing to record); the reference's
    PUT answer carries no id, so there the customer is enough.
    """
    entity = answered_entity(result)
    errors = messages(result.get("errors")) or messages(entity.get("errors"))
    warnings = messages(list(result.get("warnings") or []) + list(entity.get("warnings") or []))
    capillary_id = _answered_id(entity)
    answered = capillary_id is not None or (not require_id and bool(entity.get("profiles") or entity.get("id")))
    if errors or not answered:
        missing = "Capillary answered no customer id" if require_id else "Capillary answered no customer"
        first = errors[0] if errors else {"code": None, "message": missing}
        return CustomerOutcome(
            status=STATUS_FAILED,
            error_code=first["code"],
            error_message="; ".join(e["message"] for e in errors) or first["message"],
            warnings=warnings,
        )
    return CustomerOutcome(
        status=STATUS_WARNING if warnings else STATUS_SUCCESS, capillary_id=capillary_id, warnings=warnings
    )


def _association_fields(details: Any) -> dict[str, Any]:
    details = details if isinstance(details, Mapping) else {}
    company = details.get("fleetCompany")
    return {
        "hierarchyCode": details.get("hierarchyCode"),
        "roleCode": details.get("roleCode"),
        "fleetCompany.externalId": company.get("externalId") if isinstance(company, Mapping) else None,
    }


def association_difference(sent: Any, answered: Any) -> str | None:
    """Say how the answered association differs from the one sent (fields both name), or None."""
    ours, theirs = _association_fields(sent), _association_fields(answered)
    differing = [k for k in ours if ours[k] is not None and theirs[k] is not None and str(ours[k]) != str(theirs[k])]
    if not differing:
        return None
    return (f"Capillary answered association {', '.join(f'{k}={theirs[k]}' for k in differing)} "
            f"but we sent {', '.join(f'{k}={ours[k]}' for k in differing)}")


def _first_profile(customer: Mapping[str, Any], source: Any = None) -> Mapping[str, Any]:
    profiles = [p for p in customer.get("profiles") or [] if isinstance(p, Mapping)]
    same_source = [p for p in profiles if source is not None and p.get("source") == source]
    return (same_source or profiles or [{}])[0]


def names_differ(sent: Mapping[str, Any], entity: Mapping[str, Any]) -> bool:
    """Whether the answered customer's firstName/lastName differ from the ones sent (names both carry)."""
    ours = _first_profile(sent)
    theirs = _first_profile(entity, ours.get("source"))
    for name in ("firstName", "lastName"):
        if ours.get(name) is not None and name in theirs and str(theirs[name] or "").strip() != str(ours[name]).strip():
            return True
    return False
