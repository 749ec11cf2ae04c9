"""The client-side limiter: even spacing under the budget, Retry-After pauses, one budget per credential."""

from __future__ import annotations

import threading

import pytest

from associate.capillary.ratelimit import RateLimiter, limiter_for, reset_registry


class FakeClock:
    """A clock that only moves when the limiter sleeps (no real waiting, no timing in tests)."""

    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_requests_are_spaced_so_no_minute_exceeds_the_budget():
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=lambda s: None)
    starts = []
    for _ in range(500):
        wait = limiter.reserve()
        starts.append(clock.now + wait)
    # In every sliding 60 s window the number of requests stays within the budget.
    worst = max(sum(1 for t in starts if s <= t < s + 60) for s in starts)
    assert worst <= 100
    # ... while the budget is still used: at least 95 of the 100 requests a minute.
    assert (len(starts) - 1) / ((starts[-1] - starts[0]) / 60) >= 95


def test_an_idle_spell_builds_no_burst():
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock, sleep=lambda s: None)
    limiter.reserve()
    clock.now += 600  # ten idle minutes
    waits = [limiter.reserve() for _ in range(3)]
    assert waits[0] == 0
    assert waits[1] > 0.9 and waits[2] > waits[1]


def test_pause_holds_every_caller_back_until_retry_after():
    clock = FakeClock()
    limiter = RateLimiter(6000, clock=clock, sleep=lambda s: None)
    limiter.reserve()
    limiter.pause(7.5)
    assert limiter.reserve() >= 7.5
    assert limiter.reserve() > 7.5


def test_threads_never_get_the_same_slot():
    clock = FakeClock()
    limiter = RateLimiter(600, clock=clock, sleep=lambda s: None)
    slots: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(50):
            wait = limiter.reserve()
            with lock:
                slots.append(round(clock.now + wait, 9))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert len(slots) == 200 and min(gaps) >= limiter.interval - 1e-6


def test_one_limiter_per_host_and_credential():
    reset_registry()
    a = limiter_for("https://eu.api.capillarytech.com", "basic:till", 100)
    assert limiter_for("https://eu.api.capillarytech.com", "basic:till", 100) is a
    assert limiter_for("https://eu.api.capillarytech.com", "oauth:key", 100) is not a
    assert limiter_for("https://us.api.capillarytech.com", "basic:till", 100) is not a
    # An edited connection changes the shared budget instead of adding a second one.
    assert limiter_for("https://eu.api.capillarytech.com", "basic:till", 50) is a and a.rpm == 50
    reset_registry()


@pytest.mark.parametrize("rpm", [0, -5])
def test_a_budget_must_be_positive(rpm):
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rpm)
