"""What Capillary answered: the transport's ``CallResult``, its JSON, and customer and company outcomes.

Every body is parsed here (``parse_json``), and every server message that reaches an
outcome or an exception is masked here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from associate.exceptions import CapillaryAuthError, CapillaryError
from associate.masking import mask_text
from associate.tables import STATUS_FAILED, STATUS_SUCCESS, STATUS_WARNING

if TYPE_CHECKING:
    import requests

# What ensure_companies did with a company.
CREATED, UPDATED, UNCHANGED, FAILED = "created", "updated", "unchanged", "failed"


def parse_json(response: requests.Response | None) -> Any:
    """Return the JSON body of a response, or None when there is none or it is not JSON."""
    try:
        return response.json() if response is not None else None
    except ValueError:
        return None


def int_or_none(value: Any) -> int | None:
    """Return ``value`` as an int, or None when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def messages(items: Any) -> list[dict[str, Any]]:
    """Return API messages as ``{code, message}`` with masked text, without repeats."""
    out: list[dict[str, Any]] = []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        entry = {"code": int_or_none(item.get("code")), "message": mask_text(item.get("message") or "")}
        if entry not in out:
            out.append(entry)
    return out


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
        """Whether the call succeeded (HTTP 2xx)."""
        return self.status is not None and 200 <= self.status < 300

    @cached_property
    def body(self) -> Any:
        """The JSON body, parsed once."""
        return parse_json(self.response)

    def first_error(self) -> tuple[int | None, str]:
        """Return (code, message) of a whole-request error body, masked."""
        if self.response is None:
            return None, self.failure or "no answer"
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        if errors and isinstance(errors, list) and isinstance(errors[0], dict):
            first = errors[0]
            return int_or_none(first.get("code")), mask_text(first.get("message") or "")
        return self.status, mask_text(f"HTTP {self.status}: {self.response.text[:200]}")

    def error(self, what: str) -> CapillaryError:
        """Return the exception of a failed call: ``CapillaryAuthError`` for 401/403."""
        code, message = self.first_error()
        kind = CapillaryAuthError if self.status in (401, 403) else CapillaryError
        return kind(f"{what}: {message}", status=self.status, code=code)

    def expect(self, what: str, *, tolerate: Callable[[int | None, int | None], bool] | None = None) -> Any:
        """Return the body of a 2xx answer, or None when ``tolerate(status, code)`` allows the error; else raise."""
        if self.ok:
            return self.body
        if tolerate is not None and tolerate(self.status, self.first_error()[0]):
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
    """One bulk element's outcome, its children's (in ``childCustomers`` order) and its attempts."""

    index: int = 0
    attempts: int = 0
    children: list[CustomerOutcome] = field(default_factory=list)

    def apply(self, result: Any) -> None:
        """Take the element's result of a per-element answer."""
        result = result if isinstance(result, Mapping) else {}
        main = customer_outcome(result)
        self.status, self.capillary_id = main.status, main.capillary_id
        self.error_code, self.error_message, self.warnings = main.error_code, main.error_message, main.warnings
        self.children = [
            customer_outcome(child) if isinstance(child, Mapping) else CustomerOutcome(error_message="no child result")
            for child in result.get("childEntities") or []
        ]

    def fail(self, code: int | None, message: str) -> None:
        """Mark the element failed with a whole-request error."""
        self.status, self.capillary_id = STATUS_FAILED, None
        self.error_code, self.error_message = code, mask_text(message)


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


def customer_outcome(result: Mapping[str, Any]) -> CustomerOutcome:
    """Map one answered customer (element or child entity) to an outcome."""
    entity = result.get("entity") if "entity" in result else result
    entity = entity if isinstance(entity, Mapping) else {}
    errors = messages(result.get("errors")) or messages(entity.get("errors"))
    warnings = messages(list(result.get("warnings") or []) + list(entity.get("warnings") or []))
    capillary_id = int_or_none(entity.get("id"))
    if errors or capillary_id is None:
        first = errors[0] if errors else {"code": None, "message": "Capillary answered no customer id"}
        return CustomerOutcome(
            status=STATUS_FAILED,
            error_code=first["code"],
            error_message="; ".join(e["message"] for e in errors) or first["message"],
            warnings=warnings,
        )
    return CustomerOutcome(
        status=STATUS_WARNING if warnings else STATUS_SUCCESS, capillary_id=capillary_id, warnings=warnings
    )


def per_element_results(body: Any) -> list[Any] | None:
    """Return the bulk call's per-element list (also sent with a 500 "all failed"), or None."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("response"), list):
        return body["response"]
    return None
