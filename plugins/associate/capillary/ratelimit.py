"""Client-side rate limiting of Capillary calls, shared by the threads of a worker process.

Capillary counts requests per API key per minute; going over it costs a 429 and a
``Retry-After`` pause. A GCRA limiter (a token bucket with burst 1) spaces requests
evenly at a little under the budget, so a sliding 60 s window on the server never sees
more than the budget. One limiter exists per host and credential in a process
(``limiter_for``), so every task thread and every client sharing a credential
shares the budget. Across worker processes the Airflow pool ``capillary_api`` bounds
concurrency; that is the DAG's business.
"""

from __future__ import annotations

import threading
import time

# Requests are spaced at this fraction of the budget: a sliding window on the server
# and clock jitter between client and server must never see one request too many.
DEFAULT_HEADROOM = 0.98


class RateLimiter:
    """A thread-safe GCRA limiter: at most ``rpm`` requests per minute, evenly spaced."""

    def __init__(self, rpm: float, *, headroom: float = DEFAULT_HEADROOM, clock=time.monotonic, sleep=time.sleep):
        if rpm <= 0:
            raise ValueError(f"rate limit must be a positive number of requests per minute, got {rpm!r}")
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._tat = 0.0  # theoretical arrival time of the next request
        self._paused_until = 0.0
        self.rpm = float(rpm)
        self.headroom = headroom
        self.acquired = 0
        self.waited_seconds = 0.0

    @property
    def interval(self) -> float:
        """Seconds between two requests."""
        return 60.0 / (self.rpm * self.headroom)

    def set_rate(self, rpm: float) -> None:
        """Change the budget (a connection was edited); the new spacing applies from now."""
        if rpm <= 0:
            raise ValueError(f"rate limit must be a positive number of requests per minute, got {rpm!r}")
        with self._lock:
            self.rpm = float(rpm)

    def reserve(self) -> float:
        """Book the next slot and return how long the caller must wait for it."""
        with self._lock:
            now = self._clock()
            # A slot is never given in the past: an idle spell does not build up a burst.
            start = max(self._tat, now, self._paused_until)
            self._tat = start + self.interval
            self.acquired += 1
            wait = start - now
            self.waited_seconds += wait
            return wait

    def acquire(self) -> float:
        """Block until the caller may send one request; return the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the server said ``Retry-After``)."""
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            self._paused_until = max(self._paused_until, until)
            self._tat = max(self._tat, self._paused_until)


_registry: dict[tuple[str, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(host: str, credential: str, rpm: float) -> RateLimiter:
    """The process-wide limiter of one host and credential (created on first use)."""
    key = (host, credential)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RateLimiter(rpm)
        elif limiter.rpm != float(rpm):
            limiter.set_rate(rpm)
        return limiter


def reset_registry() -> None:
    """Forget every limiter (tests start each sandbox with a fresh budget)."""
    with _registry_lock:
        _registry.clear()
