"""Client-side rate limiting of Capillary calls: one budget per API key, however many share it.

Capillary counts requests per API key per minute; going over it costs a 429 and a
``Retry-After`` pause. A GCRA limiter (a token bucket with burst 1) spaces requests
evenly at a little under the budget, so a sliding 60 s window on the server never sees
more than the budget. ``limiter_for`` returns the one limiter of a cluster and credential
in a process; where its state lives depends on the deployment (``budget_mode``):

- ``redis``: ``[associate] rate_limit_redis_conn_id`` names an Airflow Redis connection;
  every process on every worker books its slots there (``shared_budget.RedisRateLimiter``).
- ``host``: every task runs on this host (LocalExecutor, ``airflow dags test``); the
  processes book slots in a locked file under ``$AIRFLOW_HOME/associate/ratelimit/``.
- ``divided``: tasks spread over hosts without Redis; each process keeps its own limiter
  at ``rpm / [associate] rate_limit_sharers``, so the sharers together stay under it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from associate.exceptions import CapillaryThrottled

log = logging.getLogger(__name__)

# Requests are spaced at this fraction of the budget: a sliding window on the server
# and clock jitter between client and server must never see one request too many.
DEFAULT_HEADROOM = 0.98


def checked_rpm(rpm: float) -> float:
    """A budget as a float; a budget of nothing or less is a configuration error."""
    if rpm <= 0:
        raise ValueError(f"rate limit must be a positive number of requests per minute, got {rpm!r}")
    return float(rpm)


class EvenSpacing:
    """The spacing of a GCRA budget (burst 1): ``rpm`` requests a minute at ``headroom`` of it."""

    rpm: float
    headroom: float

    @property
    def interval(self) -> float:
        """Seconds between two requests (of all sharers together, for a shared budget)."""
        return 60.0 / (self.rpm * self.headroom)


class RateLimiter(EvenSpacing):
    """A thread-safe GCRA limiter: at most ``rpm`` requests per minute, evenly spaced."""

    mode = "process"

    def __init__(self, rpm: float, *, headroom: float = DEFAULT_HEADROOM, clock=time.monotonic, sleep=time.sleep,
                 description: str = ""):
        rpm = checked_rpm(rpm)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._tat = 0.0  # theoretical arrival time of the next request
        self._paused_until = 0.0
        self.rpm = float(rpm)
        # The key's whole budget; more than ``rpm`` when this process has only a share of it.
        self.budget_rpm = self.rpm
        self.headroom = headroom
        self.acquired = 0
        self.waited_seconds = 0.0
        self.description = description or f"Rate budget: {self.rpm:g} requests/min in this process"

    def describe(self) -> str:
        """The budget in plain words, for the task log."""
        return self.description

    def set_rate(self, rpm: float) -> None:
        """Change the budget (a connection was edited); the new spacing applies from now."""
        rpm = checked_rpm(rpm)
        with self._lock:
            self.rpm = rpm

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


# Executors whose tasks all run on the scheduler's host: a file there reaches every sharer.
ONE_HOST_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


@dataclass(frozen=True)
class BudgetMode:
    """Where one key's budget is kept: ``redis``, ``host`` or ``divided`` (see the module doc)."""

    name: str
    redis_conn_id: str | None = None
    sharers: int = 1
    executor: str = ""


def runs_on_one_host(executor: str) -> bool:
    """True when every configured executor runs its tasks on this host."""
    # "LocalExecutor", a class path, or Airflow 3's list "alias:path, other" of several executors.
    names = [part.strip().split(":")[-1].rsplit(".", 1)[-1] for part in executor.split(",") if part.strip()]
    return bool(names) and all(name in ONE_HOST_EXECUTORS for name in names)


def budget_mode() -> BudgetMode:
    """The deployment's mode, from ``[associate]`` settings and ``[core] executor``."""
    from airflow.configuration import conf

    from associate import config

    sharers = config.rate_limit_sharers()
    conn_id = config.rate_limit_redis_conn_id()
    executor = conf.get("core", "executor", fallback="LocalExecutor") or "LocalExecutor"
    if conn_id:
        return BudgetMode("redis", redis_conn_id=conn_id, sharers=sharers, executor=executor)
    if runs_on_one_host(executor):
        return BudgetMode("host", sharers=sharers, executor=executor)
    return BudgetMode("divided", sharers=sharers, executor=executor)


def divided_limiter(credential: str, rpm: float, mode: BudgetMode, why: str = "") -> RateLimiter:
    """This process's share of the budget: ``rpm / sharers``."""
    share = float(rpm) / mode.sharers
    reason = why or (f"executor {mode.executor} runs tasks on several hosts and no "
                     "[associate] rate_limit_redis_conn_id is set")
    limiter = RateLimiter(share, description=(
        f"Rate budget divided: this process uses {share:g} of {float(rpm):g} requests/min for {credential} "
        f"([associate] rate_limit_sharers = {mode.sharers}; {reason}); set [associate] "
        "rate_limit_redis_conn_id to share one budget"))
    limiter.budget_rpm = float(rpm)
    return limiter
