"""Counters served at ``GET /__sandbox/stats``."""

from __future__ import annotations

import collections
import threading
import time


# Requests outside the API budget: token calls, and the sandbox's own pages (stats, spec).
UNBUDGETED = ("/oauth/", "/__sandbox/", "/openapi")


class Stats:
    """Requests by endpoint and status, injected faults, 429s and bulk elements (since start)."""

    # The busiest window is measured over the last this many requests (bounded memory).
    KEPT_TIMES = 500_000
    WINDOW_SECONDS = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        # When each request was answered: the client's sustained rate and busiest minute.
        self.times: collections.deque[float] = collections.deque(maxlen=self.KEPT_TIMES)
        self.spans: dict[str, list[float]] = {}
        self.requests: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.faults: collections.Counter = collections.Counter()
        self.elements: collections.Counter = collections.Counter()
        self.tokens_issued = 0

    def request(self, endpoint: str, status: int | str) -> None:
        """Count one request replied to (or dropped)."""
        now = time.time()
        with self._lock:
            self.requests[endpoint][str(status)] += 1
            if not any(part in endpoint for part in UNBUDGETED):
                self.times.append(now)
            span = self.spans.setdefault(endpoint, [now, now])
            span[1] = now

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
                "busiestWindow": self._busiest_window(),
                "spans": {endpoint: {"first": round(first, 3), "last": round(last, 3)}
                          for endpoint, (first, last) in sorted(self.spans.items())},
            }

    def _busiest_window(self) -> dict:
        """The most API requests in any WINDOW_SECONDS (UNBUDGETED ones aside), and when that window began."""
        times, best, start, left = list(self.times), 0, None, 0
        for right, now in enumerate(times):
            while now - times[left] >= self.WINDOW_SECONDS:
                left += 1
            if right - left + 1 > best:
                best, start = right - left + 1, times[left]
        return {"seconds": self.WINDOW_SECONDS, "requests": best, "start": round(start, 3) if start else None}
