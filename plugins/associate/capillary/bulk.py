"""``POST``/``PUT /v2/customers/bulk``: elements in, one outcome per element out, whatever goes wrong.

Decided by code, whatever the HTTP status. A ``1060`` (batch limit, or HTTP 413) halves
the batch size for the rest of the sender's life; a whole-request error that carries a
code (``400``, the bare ``500`` "all requests failed", an element's code) is bisected
until the offending element stands alone; per-element results (a JSON array, or an
object carrying it) are mapped element by element whatever the status. In a PUT,
elements answered ``8015`` (no such customer) are re-sent by POST in the same call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from associate.capillary import endpoints
from associate.capillary.outcomes import BulkOutcome, CallResult, per_element_results
from associate.capillary.transport import Transport
from associate.masking import PiiMaskingFilter
from associate.models import Codes
from associate.tables import STATUS_FAILED

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())


def bulk_query(source: str, account_id: str | None) -> dict[str, str]:
    """The query of a bulk call: ``source`` always (PUT requires it), ``accountId`` when there is one."""
    query = {"source": source}
    if account_id:
        query["accountId"] = account_id
    return query


class BulkSender:
    """Sends customer elements in batches of at most ``batch_limit``."""

    def __init__(self, transport: Transport, batch_size: int):
        self.transport = transport
        self.batch_limit = batch_size

    def send(self, elements: Sequence[Mapping[str, Any] | str], *, update: bool = False,
             query: Mapping[str, str] | None = None) -> list[BulkOutcome]:
        """Send elements in order (PUT if ``update``); return one outcome per element (never raises for one)."""
        bodies = [json.loads(e) if isinstance(e, str) else dict(e) for e in elements]
        method = "PUT" if update else "POST"
        outcomes = [BulkOutcome(index=i, method=method) for i in range(len(bodies))]
        query = dict(query or {})
        self._send_in_batches(method, query, list(range(len(bodies))), bodies, outcomes)
        if update:
            # Deleted or merged in Capillary since we registered it: register it again.
            missing = [i for i, o in enumerate(outcomes)
                       if o.status == STATUS_FAILED and o.error_code == Codes.CUSTOMER_NOT_FOUND]
            if missing:
                log.info("%d of %d customers are not in Capillary (8015); registering them by POST",
                         len(missing), len(bodies))
                self._send_in_batches("POST", query, missing, bodies, outcomes)
        return outcomes

    def _send_in_batches(self, method: str, query: dict, indices: list[int], bodies: list[dict],
                         outcomes: list[BulkOutcome]) -> None:
        start = 0
        while start < len(indices):
            limit = self.batch_limit
            self._send_batch(method, query, indices[start:start + limit], bodies, outcomes)
            start += limit

    def _send_batch(self, method: str, query: dict, batch: list[int], bodies: list[dict],
                    outcomes: list[BulkOutcome]) -> None:
        answer = self.transport.send(method, endpoints.CUSTOMERS_BULK, params=query or None,
                                     json_body=[bodies[i] for i in batch])
        for i in batch:
            outcomes[i].attempts += answer.attempts
        if answer.status in (401, 403):
            raise answer.error(f"{method} {endpoints.CUSTOMERS_BULK} refused")
        results = per_element_results(answer.body)
        if results is not None:
            if len(results) != len(batch):
                self._fail(method, batch, outcomes, None,
                           f"Capillary answered {len(results)} results for {len(batch)} elements")
                return
            for i, result in zip(batch, results):
                outcomes[i].apply(result, sent=bodies[i], method=method)
            return
        code, message = answer.first_error()
        if (code == Codes.BATCH_LIMIT_EXCEEDED or answer.status == 413) and len(batch) > 1:
            self.batch_limit = max(1, len(batch) // 2)
            log.warning("Capillary batch limit exceeded with %d elements; sending at most %d per request from now on",
                        len(batch), self.batch_limit)
            self._send_in_batches(method, query, batch, bodies, outcomes)
            return
        if len(batch) > 1 and _spoiled_by_an_element(answer):
            # One bad element spoils the whole request: halves isolate it, the rest still go through.
            log.info("Bulk %s of %d elements refused (%s: %s); bisecting", method, len(batch), code, message)
            middle = len(batch) // 2
            self._send_batch(method, query, batch[:middle], bodies, outcomes)
            self._send_batch(method, query, batch[middle:], bodies, outcomes)
            return
        if answer.ok:
            code, message = None, f"Capillary answered no per-element results (HTTP {answer.status})"
        self._fail(method, batch, outcomes, code, message)

    @staticmethod
    def _fail(method: str, batch: list[int], outcomes: list[BulkOutcome], code: int | None, message: str) -> None:
        for i in batch:
            outcomes[i].fail(code, message, method=method)


def _spoiled_by_an_element(answer: CallResult) -> bool:
    """Whether a whole-request error may come from one element: a 400, or an answer carrying a code.

    Not an outage (retries given up, or no answer at all): bisecting would only multiply the load.
    """
    if answer.response is None or answer.failure is not None:
        return False
    return answer.status == 400 or bool(answer.codes)
