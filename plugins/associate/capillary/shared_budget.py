"""GCRA limiters whose state every sharer of a key reaches: a locked file on one host, or Redis.

Both book slots the way ``ratelimit.RateLimiter`` does in one process: the next slot is
``max(tat, now, paused_until)``, the theoretical arrival time moves one interval on, and
the caller sleeps until its slot. Every sharer waits in the same queue, so requests stay
evenly spaced at 98 % of the budget however many processes send, an idle spell builds no
burst, and ``pause`` (a 429's ``Retry-After``) holds every sharer.

When the store fails (Redis unreachable, file not writable) the process falls back to its
share of the budget (``rpm / [associate] rate_limit_sharers``) with a warning, and tries the
store again after ``STORE_RETRY_SECONDS``: a limiter never fails a customer.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from associate.capillary.ratelimit import (
    DEFAULT_HEADROOM, BudgetMode, EvenSpacing, RateLimiter, checked_rpm, divided_limiter,
)

log = logging.getLogger(__name__)

# After a store error, this process uses its divided share for this long before trying again.
STORE_RETRY_SECONDS = 30.0
# A booked state further ahead than this is a wall clock stepped back, not a queue: start afresh.
IMPLAUSIBLE_AHEAD_SECONDS = 3600.0
# Redis calls give up after this long: a hung store must not hang every task.
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_KEY_PREFIX = "associate:ratelimit:"


def budget_key(host: str, credential: str) -> str:
    """A short stable name for one cluster and credential (file name, Redis key suffix)."""
    return hashlib.sha256(f"{host}\n{credential}".encode()).hexdigest()[:24]


class SharedRateLimiter(EvenSpacing):
    """A GCRA limiter whose slots live in a store; falls back to a divided share on store errors."""

    mode = "shared"

    def __init__(self, rpm: float, credential: str, mode: BudgetMode, *, headroom: float = DEFAULT_HEADROOM,
                 sleep=time.sleep):
        self.rpm = self.budget_rpm = checked_rpm(rpm)
        self.credential = credential
        self.budget_mode = mode
        self.headroom = headroom
        self._sleep = sleep
        self._fallback: RateLimiter | None = None
        self._store_down_until = 0.0
        self._fallback_lock = threading.Lock()
        self.acquired = 0
        self.waited_seconds = 0.0
        self.store_errors = 0

    def set_rate(self, rpm: float) -> None:
        """Change the budget; the new spacing applies from the next booking."""
        self.rpm = self.budget_rpm = checked_rpm(rpm)

    # -- the store (subclasses) -----------------------------------------------------------------

    def _reserve_shared(self, interval: float) -> float:
        raise NotImplementedError

    def _pause_shared(self, seconds: float) -> None:
        raise NotImplementedError

    def store_name(self) -> str:
        """Where the budget is kept, in words."""
        raise NotImplementedError

    def describe(self) -> str:
        """The budget in plain words, for the task log."""
        return f"Rate budget: {self.rpm:g} requests/min for {self.credential} {self.store_name()}"

    # -- booking --------------------------------------------------------------------------------

    def _share(self) -> RateLimiter:
        with self._fallback_lock:
            if self._fallback is None or self._fallback.budget_rpm != self.rpm:
                self._fallback = divided_limiter(self.credential, self.rpm, self.budget_mode,
                                                 why="the shared store failed")
            return self._fallback

    def _store_failed(self, exc: BaseException) -> None:
        self.store_errors += 1
        self._store_down_until = time.monotonic() + STORE_RETRY_SECONDS
        share = self._share()
        log.warning("Rate budget store failed (%s: %s); for %.0f s this process uses %g of %g requests/min "
                    "for %s ([associate] rate_limit_sharers = %d), then tries the store again",
                    type(exc).__name__, exc, STORE_RETRY_SECONDS, share.rpm, self.rpm, self.credential,
                    self.budget_mode.sharers)

    def _store_usable(self) -> bool:
        return time.monotonic() >= self._store_down_until

    def reserve(self) -> float:
        """Book the next slot of the shared budget; return how long the caller must wait for it."""
        if self._store_usable():
            try:
                wait = max(0.0, self._reserve_shared(self.interval))
            except Exception as exc:  # noqa: BLE001 - OSError, redis errors, a missing connection: never fail a customer
                self._store_failed(exc)
            else:
                self.acquired += 1
                self.waited_seconds += wait
                return wait
        return self._share().reserve()

    def acquire(self) -> float:
        """Block until the caller may send one request; return the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Hold every sharer back for ``seconds`` (the server said ``Retry-After``)."""
        seconds = max(0.0, seconds)
        # The fallback share pauses too: a process that loses the store meanwhile still waits.
        self._share().pause(seconds)
        if self._store_usable():
            try:
                self._pause_shared(seconds)
            except Exception as exc:  # noqa: BLE001 - see reserve
                self._store_failed(exc)

    def forget(self) -> None:
        """Drop the shared state (tests)."""


class HostFileRateLimiter(SharedRateLimiter):
    """Slots booked in a file under ``$AIRFLOW_HOME/associate/ratelimit/``, under an exclusive ``flock``."""

    mode = "host"

    def __init__(self, rpm: float, credential: str, mode: BudgetMode, path: Path, *, clock=time.time, **kwargs):
        super().__init__(rpm, credential, mode, **kwargs)
        self.path = Path(path)
        # Wall-clock seconds: the one clock every process of the host reads alike, also after a reboot.
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._fd_pid: int | None = None

    @classmethod
    def for_host(cls, host: str, credential: str, rpm: float, mode: BudgetMode) -> HostFileRateLimiter:
        """The limiter of a cluster and credential, its file under ``$AIRFLOW_HOME``."""
        from associate import config

        folder = config.airflow_home() / "associate" / "ratelimit"
        return cls(rpm, credential, mode, folder / f"{budget_key(host, credential)}.gcra")

    def store_name(self) -> str:
        return f"shared by the processes of this host (file {self.path})"

    def _open(self) -> int:
        # A forked child must not share the parent's descriptor: flock belongs to the open file, and
        # a shared one would let both processes hold "the" lock at once.
        if self._fd is None or self._fd_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    def _update(self, change) -> float:
        """Apply ``change(now, tat, paused) -> (tat, paused, result)`` under the file lock."""
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
                try:
                    tat, paused = float(text[0]), float(text[1])
                except (IndexError, ValueError):
                    tat, paused = 0.0, 0.0  # new or torn file: nothing booked
                now = self._clock()
                if max(tat, paused) > now + IMPLAUSIBLE_AHEAD_SECONDS:
                    tat, paused = now, now
                tat, paused, result = change(now, tat, paused)
                data = f"{tat:.6f} {paused:.6f}\n".encode()
                os.pwrite(fd, data.ljust(64), 0)
                return result
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _reserve_shared(self, interval: float) -> float:
        def book(now, tat, paused):
            start = max(tat, now, paused)
            return start + interval, paused, start - now

        return self._update(book)

    def _pause_shared(self, seconds: float) -> None:
        def hold(now, tat, paused):
            paused = max(paused, now + seconds)
            return max(tat, paused), paused, 0.0

        self._update(hold)

    def forget(self) -> None:
        with self._lock:
            if self._fd is not None and self._fd_pid == os.getpid():
                os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


# Atomic in Redis: book the next slot on the server's clock (no skew between workers).
# KEYS[1] the budget's hash; ARGV[1] interval seconds. Returns the wait in seconds, as text
# (Redis turns a Lua number into an integer).
RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tat', 'paused')
local tat = tonumber(state[1]) or 0
local paused = tonumber(state[2]) or 0
local start = math.max(tat, now, paused)
local next_tat = start + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', next_tat))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(next_tat, paused) - now) * 1000) + 60000)
return string.format('%.6f', start - now)
"""

# KEYS[1] the budget's hash; ARGV[1] seconds every sharer holds off from now.
PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tat', 'paused')
local paused = math.max(tonumber(state[2]) or 0, now + tonumber(ARGV[1]))
local tat = math.max(tonumber(state[1]) or 0, paused)
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat), 'paused', string.format('%.6f', paused))
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) * 1000) + 60000)
return 'ok'
"""


class RedisRateLimiter(SharedRateLimiter):
    """Slots booked in one Redis hash per cluster and credential, by a Lua script (one round trip)."""

    mode = "redis"

    def __init__(self, rpm: float, credential: str, mode: BudgetMode, key: str, client_factory, **kwargs):
        super().__init__(rpm, credential, mode, **kwargs)
        self.key = key
        self._client_factory = client_factory
        self._client = None
        self._scripts = None
        self._client_lock = threading.Lock()

    @classmethod
    def for_connection(cls, host: str, credential: str, rpm: float, mode: BudgetMode) -> RedisRateLimiter:
        """The limiter of a cluster and credential in the Redis of ``mode.redis_conn_id``."""
        return cls(rpm, credential, mode, REDIS_KEY_PREFIX + budget_key(host, credential),
                   lambda: redis_client(mode.redis_conn_id))

    def store_name(self) -> str:
        return f"shared through Redis ({self.budget_mode.redis_conn_id})"

    def _scripts_of_client(self):
        with self._client_lock:
            if self._scripts is None:
                client = self._client_factory()
                self._scripts = (client.register_script(RESERVE_LUA), client.register_script(PAUSE_LUA))
                self._client = client
            return self._scripts

    def _reserve_shared(self, interval: float) -> float:
        reserve, _ = self._scripts_of_client()
        return float(reserve(keys=[self.key], args=[f"{interval:.6f}"]))

    def _pause_shared(self, seconds: float) -> None:
        _, pause = self._scripts_of_client()
        pause(keys=[self.key], args=[f"{seconds:.6f}"])

    def forget(self) -> None:
        if self._client is not None:
            self._client.delete(self.key)


def redis_client(conn_id: str):
    """The redis-py client of an Airflow ``redis`` connection, with bounded timeouts."""
    from airflow.providers.redis.hooks.redis import RedisHook

    client = RedisHook(redis_conn_id=conn_id).get_conn()
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        # RedisHook sets no timeouts; an unreachable Redis must fall back, not hang the task.
        for name in ("socket_timeout", "socket_connect_timeout"):
            if pool.connection_kwargs.get(name) is None:
                pool.connection_kwargs[name] = REDIS_TIMEOUT_SECONDS
    return client
