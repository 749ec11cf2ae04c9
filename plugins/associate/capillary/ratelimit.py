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

import random
import threading
import time

from associate.exceptions import CapillaryThrottled

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


# The server counts requests in a sliding window of this many seconds.
WINDOW_SECONDS = 60.0
# Jitter added to a 429's wait: a little after Retry-After, a few seconds after a whole window.
RETRY_AFTER_JITTER = 0.25
WINDOW_JITTER = 5.0


class ThrottleWaits:
    """The waits after 429s of one task: past the server's window, within a bounded total.

    A 429 is a reason to wait, never to fail a customer. With ``Retry-After`` the wait is
    that plus up to 0.25 s of jitter; without it, a whole window (60 s) plus up to 5 s of
    jitter, so every request the server counted before the 429 has left its window. The
    waits of one task add up; a wait that would take the total past ``bound`` seconds
    raises ``CapillaryThrottled`` instead (the task's Airflow retry resumes later).
    """

    def __init__(self, bound: float, *, jitter=random.uniform):
        self.bound = float(bound)
        self.waited = 0.0
        self.count = 0
        self._jitter = jitter
        self._lock = threading.Lock()

    def next_wait(self, retry_after: float | None) -> float:
        """Return the seconds to wait after a 429 (and count them), or raise past the bound."""
        if retry_after is None:
            wait = WINDOW_SECONDS + self._jitter(0, WINDOW_JITTER)
        else:
            wait = max(0.0, retry_after) + self._jitter(0, RETRY_AFTER_JITTER)
        with self._lock:
            if self.waited + wait > self.bound:
                raise CapillaryThrottled(
                    f"Capillary still answers 429 after {self.count} throttle waits ({self.waited:.0f} s in all); "
                    f"waiting {wait:.0f} s more would pass the bound of {self.bound:.0f} s (extra max_throttle_wait). "
                    f"The task's retry resumes after the last recorded batch"
                )
            self.waited += wait
            self.count += 1
        return wait


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
