"""A task's time with Capillary: overlapping requests of several threads count once (``transport.WallTime``)."""

from __future__ import annotations

from associate.capillary import transport
from associate.capillary.transport import WallTime


def test_overlapping_spans_count_once_and_gaps_not_at_all(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(transport.time, "monotonic", lambda: now[0])
    clock = WallTime()

    def at(t: float, step) -> None:
        now[0] = t
        step()

    at(0, clock.enter)   # thread 1 in a request
    at(1, clock.enter)   # thread 2 too
    at(2, clock.leave)
    at(5, clock.leave)   # 0..5: five seconds, not 5 + 1
    at(9, clock.enter)   # 5..9 nobody inside: not counted
    now[0] = 10
    assert clock.seconds == 6  # a span still open counts up to now
    at(11, clock.leave)
    assert clock.seconds == 7
