"""``POST /v2/customers/bulk``: elements in, one outcome per element out, whatever goes wrong.

A ``1060`` (batch limit) halves the batch size for the rest of the sender's life; a
whole-request ``400`` is bisected until the offending element stands alone; a ``500``
"all failed" with per-element results is mapped element by element.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from associate.capillary import endpoints
from associate.capillary.outcomes import BulkOutcome, parse_json, per_element_results
from associate.capillary.transport import Transport
from associate.masking import PiiMaskingFilter
from associate.models import Codes

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())


class BulkSender:
    """Sends customer elements in batches of at most ``batch_limit``."""

    def __init__(self, transport: Transport, batch_size: int):
        self.transport = transport
        self.batch_limit = batch_size

    def send(self, elements: Sequence[Mapping[str, Any] | str]) -> list[BulkOutcome]:
        """Send elements in order; return one outcome per element (never raises for one bad element)."""
        bodies = [json.loads(e) if isinstance(e, str) else dict(e) for e in elements]
        outcomes = [BulkOutcome(index=i) for i in range(len(bodies))]
        self._send_in_batches(list(range(len(bodies))), bodies, outcomes)
        return outcomes

    def _send_in_batches(self, indices: list[int], bodies: list[dict], outcomes: list[BulkOutcome]) -> None:
        start = 0
        while start < len(indices):
            limit = self.batch_limit
            self._send_batch(indices[start:start + limit], bodies, outcomes)
            start += limit

    def _send_batch(self, batch: list[int], bodies: list[dict], outcomes: list[BulkOutcome]) -> None:
        answer = self.transport.send("POST", endpoints.CUSTOMERS_BULK, json_body=[bodies[i] for i in batch],
                                     final_5xx=lambda r: per_element_results(parse_json(r)) is not None)
        for i in batch:
            outcomes[i].attempts += answer.attempts
        results = per_element_results(answer.body) if answer.status in (200, 500) else None
        if results is not None:
            if len(results) != len(batch):
                self._fail(batch, outcomes, None, f"Capillary answered {len(results)} results for {len(batch)} elements")
                return
            for i, result in zip(batch, results):
                outcomes[i].apply(result)
            return
        if answer.status in (401, 403):
            raise answer.error(f"POST {endpoints.CUSTOMERS_BULK} refused")
        code, message = answer.first_error()
        if (code == Codes.BATCH_LIMIT_EXCEEDED or answer.status == 413) and len(batch) > 1:
            self.batch_limit = max(1, len(batch) // 2)
            log.warning("Capillary batch limit exceeded with %d elements; sending at most %d per request from now on",
                        len(batch), self.batch_limit)
            self._send_in_batches(batch, bodies, outcomes)
            return
        if answer.status == 400 and len(batch) > 1:
            # One bad element spoils the whole request: halves isolate it, the rest still go through.
            log.info("Bulk request of %d elements refused (%s: %s); bisecting", len(batch), code, message)
            middle = len(batch) // 2
            self._send_batch(batch[:middle], bodies, outcomes)
            self._send_batch(batch[middle:], bodies, outcomes)
            return
        self._fail(batch, outcomes, code, message)

    @staticmethod
    def _fail(batch: list[int], outcomes: list[BulkOutcome], code: int | None, message: str) -> None:
        for i in batch:
            outcomes[i].fail(code, message)
