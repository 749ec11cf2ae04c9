"""The wait after a 429: past the server's window, within a bounded total per task, never a failed customer."""

from __future__ import annotations

import pytest

from associate.capillary.ratelimit import WINDOW_SECONDS, RateLimiter, ThrottleWaits
from associate.capillary.settings import ClientSettings
from associate.exceptions import AssociateError, CapillaryError, CapillaryThrottled, PermanentError


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self):
        self.now = 500.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def no_jitter(low: float, high: float) -> float:
    return 0.0


def full_jitter(low: float, high: float) -> float:
    return high


def test_retry_after_is_waited_plus_a_little_jitter():
    assert ThrottleWaits(900, jitter=no_jitter).next_wait(12) == 12
    assert ThrottleWaits(900, jitter=full_jitter).next_wait(12) == pytest.approx(12.25)


def test_without_retry_after_the_wait_passes_a_whole_window():
    waits = ThrottleWaits(900, jitter=no_jitter)
    assert waits.next_wait(None) == WINDOW_SECONDS == 60
    assert 60 <= ThrottleWaits(900).next_wait(None) <= 65


def test_waits_add_up_and_the_one_past_the_bound_raises_a_retryable_error():
    waits = ThrottleWaits(100, jitter=no_jitter)
    assert [waits.next_wait(30) for _ in range(3)] == [30, 30, 30]
    assert (waits.waited, waits.count) == (90, 3)
    with pytest.raises(CapillaryThrottled, match="bound of 100 s"):
        waits.next_wait(30)
    assert waits.waited == 90  # the refused wait was not counted
    assert waits.next_wait(10) == 10  # one that still fits is fine
    # Retryable by Airflow, and no CapillaryError: nothing records it as a customer's failure.
    assert issubclass(CapillaryThrottled, AssociateError)
    assert not issubclass(CapillaryThrottled, (CapillaryError, PermanentError))


def test_a_wait_pauses_every_sharer_of_the_limiter():
    clock = FakeClock()
    limiter = RateLimiter(6000, clock=clock, sleep=clock.sleep)
    waits = ThrottleWaits(900, jitter=no_jitter)
    limiter.acquire()
    limiter.pause(waits.next_wait(None))
    start = clock.now
    limiter.acquire()  # any thread of the process
    assert clock.now - start == pytest.approx(60)


def test_max_throttle_wait_is_a_connection_extra():
    class Conn:
        host, schema, port, login, password = "http://x", None, None, "till", "pw"
        extra_dejson = {"max_throttle_wait": "120"}

    assert ClientSettings.from_connection(Conn()).max_throttle_wait == 120
    Conn.extra_dejson = {}
    assert ClientSettings.from_connection(Conn()).max_throttle_wait == 900
