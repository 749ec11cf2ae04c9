"""``CapillaryClient``: the reads, bulk sends and company work of one connection's settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from associate.capillary import endpoints
from associate.capillary.bulk import BulkSender
from associate.capillary.companies import CompanyEnsurer
from associate.capillary.outcomes import BulkOutcome, CompanyOutcome, int_or_none
from associate.capillary.settings import ClientSettings
from associate.capillary.transport import CallStats, Transport
from associate.models import Codes, HierarchyDefinition


def _not_found(status: int | None, code: int | None) -> bool:
    return status == 404 or code == Codes.CUSTOMER_NOT_FOUND


class CapillaryClient:
    """Capillary's v2 customer, company and fleet hierarchy APIs over one pooled session."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.transport = Transport(settings)
        self.bulk = BulkSender(self.transport, settings.batch_size)
        self.companies = CompanyEnsurer(self.transport)

    def __enter__(self) -> CapillaryClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self.transport.close()

    @property
    def stats(self) -> CallStats:
        """Request, retry, 429, timeout and 5xx counters."""
        return self.transport.stats

    @property
    def batch_limit(self) -> int:
        """Elements per bulk request: the configured size, halved for good after a 1060."""
        return self.bulk.batch_limit

    def get_hierarchies(self) -> list[HierarchyDefinition]:
        """Return every active fleet hierarchy definition."""
        body = self.transport.call("GET", endpoints.HIERARCHIES)
        return [HierarchyDefinition.model_validate(item) for item in (body or {}).get("entity") or []]

    def lookup_customer(self, identifier_name: str, value: str, *, source: str = "ALL") -> int | None:
        """Return Capillary's user id of the customer with this identifier, or None."""
        params = {"source": source, "identifierName": identifier_name, "identifierValue": value}
        body = self.transport.call("GET", endpoints.CUSTOMER_LOOKUP, params=params, tolerate=_not_found)
        return None if body is None else int_or_none(body.get("entity"))

    def customer_details(self, identifier_name: str, value: str, *, source: str = "ALL") -> dict[str, Any] | None:
        """Return the full customer with this identifier, or None."""
        params = {"source": source, "identifierName": identifier_name, "identifierValue": value}
        return self.transport.call("GET", endpoints.CUSTOMER_DETAILS, params=params, tolerate=_not_found)

    def get_company(self, external_id: str) -> dict[str, Any] | None:
        """Return the fleet company with this external id, or None."""
        return self.transport.call("GET", endpoints.COMPANIES, params={"externalId": external_id}, tolerate=_not_found)

    def post_customers_bulk(self, elements: Sequence[Mapping[str, Any] | str]) -> list[BulkOutcome]:
        """Send customer elements in order; return one outcome per element."""
        return self.bulk.send(elements)

    def ensure_companies(self, companies: Iterable[Mapping[str, Any]]) -> list[CompanyOutcome]:
        """Create or update fleet companies, holding companies first; return one outcome per company."""
        return self.companies.ensure(companies)
