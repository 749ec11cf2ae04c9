"""The process-wide registry of rate limiters: one per cluster, credential and budget mode.

Every client of a process that shares a credential shares its limiter; the mode
(``ratelimit.budget_mode``) decides whether that limiter keeps the budget in memory
(divided), in a file of this host, or in Redis (``shared_budget``).
"""

from __future__ import annotations

import threading

from associate.capillary import shared_budget
from associate.capillary.ratelimit import BudgetMode, budget_mode, divided_limiter


def _build(host: str, credential: str, rpm: float, mode: BudgetMode):
    if mode.name == "redis":
        return shared_budget.RedisRateLimiter.for_connection(host, credential, rpm, mode)
    if mode.name == "host":
        return shared_budget.HostFileRateLimiter.for_host(host, credential, rpm, mode)
    return divided_limiter(credential, rpm, mode)


_registry: dict[tuple[str, str, BudgetMode], object] = {}
_registry_lock = threading.Lock()


def limiter_for(host: str, credential: str, rpm: float, mode: BudgetMode | None = None):
    """The process-wide limiter of one host and credential in the deployment's mode (made on first use)."""
    mode = mode or budget_mode()
    key = (host, credential, mode)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None or limiter.budget_rpm != float(rpm):
            # An edited connection's new budget replaces the old one (threads still sleeping keep theirs).
            limiter = _registry[key] = _build(host, credential, rpm, mode)
        return limiter


def reset_registry() -> None:
    """Forget every limiter and the shared state this process made (tests start each sandbox afresh)."""
    with _registry_lock:
        for limiter in _registry.values():
            forget = getattr(limiter, "forget", None)
            if forget is not None:
                forget()
        _registry.clear()
