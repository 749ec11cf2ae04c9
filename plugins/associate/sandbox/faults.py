"""Fault injection: each API request draws at most one fault from the configured ratios."""

from __future__ import annotations

import random
import threading


class FaultInjector:
    """Draws ``500``, ``502``, ``503``, ``drop``, ``slow`` or ``commit500`` with the given probabilities."""

    def __init__(self, ratios: dict[str, float], seed: int | None = None):
        self.ratios = dict(ratios)
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        """The fault for this request, or None."""
        if not self.ratios:
            return None
        with self._lock:
            point = self._random.random()
        for kind, ratio in self.ratios.items():
            if point < ratio:
                return kind
            point -= ratio
        return None
