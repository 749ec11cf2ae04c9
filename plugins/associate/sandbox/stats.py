"""Counters served at ``GET /__sandbox/stats``."""

from __future__ import annotations

import collections
import threading
import time


class Stats:
    """Requests by endpoint and status, injected faults, 429s and bulk elements (since start)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.faults: collections.Counter = collections.Counter()
        self.elements: collections.Counter = collections.Counter()
        self.tokens_issued = 0

    def request(self, endpoint: str, status: int | str) -> None:
        """Count one request replied to (or dropped)."""
        with self._lock:
            self.requests[endpoint][str(status)] += 1

    def fault(self, kind: str) -> None:
        """Count one injected fault."""
        with self._lock:
            self.faults[kind] += 1

    def bulk(self, received: int, succeeded: int, failed: int) -> None:
        """Count the elements of one processed bulk call."""
        with self._lock:
            self.elements.update(received=received, succeeded=succeeded, failed=failed)

    def token(self) -> None:
        """Count one issued OAuth token."""
        with self._lock:
            self.tokens_issued += 1

    def snapshot(self) -> dict:
        """The counters as JSON-ready data."""
        with self._lock:
            requests = {endpoint: dict(statuses) for endpoint, statuses in sorted(self.requests.items())}
            total = sum(sum(s.values()) for s in self.requests.values())
            rate_limited = sum(s.get("429", 0) for s in self.requests.values())
            return {
                "uptimeSeconds": round(time.time() - self.started, 3),
                "requestsTotal": total,
                "requests": requests,
                "faults": dict(self.faults),
                "faultsTotal": sum(self.faults.values()),
                "rateLimited": rate_limited,
                "elements": {k: self.elements.get(k, 0) for k in ("received", "succeeded", "failed")},
                "tokensIssued": self.tokens_issued,
            }
