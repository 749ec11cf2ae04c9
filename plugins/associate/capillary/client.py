"""``CapillaryClient``: the reads, bulk sends and company work of one connection's settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from associate.capillary import endpoints
from associate.capillary.bulk import BulkSender, bulk_query
from associate.capillary.companies import CompanyEnsurer
from associate.capillary.outcomes import BulkOutcome, CompanyOutcome, int_or_none
from associate.capillary.settings import ClientSettings
from associate.capillary.transport import CallStats, Transport
from associate.models import Codes, HierarchyDefinition, StoredHierarchy


# "No customer found with the given identifier" (in the given source): by code, whatever the status.
CUSTOMER_MISSING = (Codes.CUSTOMER_NOT_FOUND, Codes.CUSTOMER_NOT_FOUND_IN_SOURCE)


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

    def api_time(self) -> dict[str, Any]:
        """Requests, seconds in requests, seconds waiting for the rate budget and 429s of this client so far."""
        return self.transport.api_time()

    @property
    def batch_limit(self) -> int:
        """Elements per bulk request: the configured size, halved for good after a 1060."""
        return self.bulk.batch_limit

    def get_hierarchies(self) -> list[HierarchyDefinition]:
        """Return every fleet hierarchy definition Capillary answers (``isActive`` says which are active)."""
        body = self.transport.call("GET", endpoints.HIERARCHIES)
        return [StoredHierarchy.model_validate(item) for item in (body or {}).get("entity") or []]

    def lookup_customer(self, identifier_name: str, value: str, *, source: str = "ALL") -> int | None:
        """Return Capillary's user id of the customer with this identifier, or None."""
        params = {"source": source, "identifierName": identifier_name, "identifierValue": value}
        body = self.transport.call("GET", endpoints.CUSTOMER_LOOKUP, params=params, tolerate=CUSTOMER_MISSING)
        return None if body is None else int_or_none(body.get("entity"))

    def customer_details(self, identifier_name: str, value: str, *, source: str = "ALL") -> dict[str, Any] | None:
        """Return the full customer with this identifier, or None."""
        params = {"source": source, "identifierName": identifier_name, "identifierValue": value}
        return self.transport.call("GET", endpoints.CUSTOMER_DETAILS, params=params, tolerate=CUSTOMER_MISSING)

    def get_company(self, external_id: str) -> dict[str, Any] | None:
        """Return the fleet company with this external id, or None."""
        return self.transport.call("GET", endpoints.COMPANIES, params={"externalId": external_id},
                                   tolerate=(Codes.COMPANY_NOT_FOUND,))

    def get_hierarchy(self, *, hierarchy_id: int | None = None, code: str | None = None) -> HierarchyDefinition | None:
        """Return one active fleet hierarchy definition by id or code, or None (``1609``)."""
        params = {"id": hierarchy_id} if hierarchy_id is not None else {"code": code}
        body = self.transport.call("GET", endpoints.HIERARCHY, params=params, tolerate=(Codes.HIERARCHY_ID_INVALID,))
        return None if body is None else StoredHierarchy.model_validate(body)

    def send_customers(self, elements: Sequence[Mapping[str, Any] | str], *, update: bool = False,
                       source: str = "INSTORE", account_id: str | None = None) -> list[BulkOutcome]:
        """Register (POST) or update (PUT) customer elements in order; return one outcome per element.

        Every call carries ``?source=`` (and ``accountId`` when given). In an update, elements
        answered ``8015`` (not in Capillary) are registered by POST within this call.
        """
        return self.bulk.send(elements, update=update, query=bulk_query(source, account_id))

    def post_customers_bulk(self, elements: Sequence[Mapping[str, Any] | str], *, source: str = "INSTORE",
                            account_id: str | None = None) -> list[BulkOutcome]:
        """Register customer elements in order (``send_customers`` with ``update=False``)."""
        return self.send_customers(elements, source=source, account_id=account_id)

    def ensure_companies(self, companies: Iterable[Mapping[str, Any]], *,
                         known_ids: Mapping[str, int | None] | None = None,
                         answered: Callable[[CompanyOutcome], None] | None = None) -> list[CompanyOutcome]:
        """Create or update fleet companies, holding companies first; return one outcome per company.

        ``known_ids`` ({external id: Capillary id}, from the sync state) names the companies
        created before: they are updated by PUT, the others created by POST. A GET is sent
        only to settle an ambiguous answer (``1702``, or no answer at all). ``answered`` is
        called with each outcome as it is decided (in the calling thread).
        """
        return self.companies.ensure(companies, known_ids, answered)
