"""Change detection: which built elements to send, by payload hash against the sync state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from associate.tables import ENTITY_CUSTOMER, STATUS_FAILED

log = logging.getLogger(__name__)

# Why a row is sent (column ``change`` of ``to_send``).
NEW, CHANGED, RETRY, FORCED = "new", "changed", "retry", "forced"


@dataclass
class Changes:
    """Elements to send (with a ``change`` reason) and elements left alone."""

    to_send: pd.DataFrame
    unchanged: pd.DataFrame
    missing_keys: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many rows per reason, plus ``unchanged`` (and keys asked for but not found)."""
        counts = {reason: int(n) for reason, n in self.to_send["change"].value_counts().items()}
        counts["unchanged"] = len(self.unchanged)
        if self.missing_keys:
            counts["missing"] = len(self.missing_keys)
        return counts


def select_changes(elements: pd.DataFrame, state: pd.DataFrame, *,
                   customer_keys: list[str] | None = None) -> Changes:
    """Send rows never sent, sent with another payload hash, or failed last time.

    ``customer_keys`` (non-empty) overrides that: exactly these keys are sent, whatever
    the state says, and nothing else. Keys that are not among the elements (unknown,
    quarantined) are reported in ``missing_keys``.
    """
    if "entity" in state.columns:
        state = state[state["entity"] == ENTITY_CUSTOMER]
    previous = state.drop_duplicates("entity_key", keep="last").set_index("entity_key")
    keys = elements["entity_key"]
    old_hash = keys.map(previous["payload_hash"]) if len(previous) else pd.Series(None, index=keys.index, dtype=object)
    old_status = keys.map(previous["last_status"]) if len(previous) else pd.Series(None, index=keys.index, dtype=object)
    known = keys.isin(previous.index)

    if customer_keys:
        wanted = {str(k) for k in customer_keys}
        send = keys.isin(wanted)
        reason = pd.Series(FORCED, index=keys.index, dtype=object)
        missing = sorted(wanted - set(keys))
        if missing:
            log.warning("%d requested customer key(s) are not among the valid customers, e.g. %s",
                        len(missing), missing[0])
    else:
        retry = known & (old_status == STATUS_FAILED)
        changed = known & ~retry & (old_hash != elements["payload_hash"])
        send = ~known | retry | changed
        reason = pd.Series(NEW, index=keys.index, dtype=object)
        reason[changed] = CHANGED
        reason[retry] = RETRY
        missing = []
    to_send = elements[send].assign(change=reason[send])
    unchanged = elements[~send]
    return Changes(to_send=to_send, unchanged=unchanged, missing_keys=missing)
