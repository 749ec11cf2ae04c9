"""Change detection: which built elements to send, by payload hash against the sync state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
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


class ChangeSelector:
    """Selects what to send slice by slice against one read of the sync state.

    Rules (``select_changes``): send rows never sent, sent with another payload hash, or
    failed last time; with ``customer_keys`` (non-empty), exactly those keys and nothing
    else. Keys asked for that no slice held are reported by ``missing_keys()``.
    """

    def __init__(self, state: pd.DataFrame, *, customer_keys: list[str] | None = None):
        if "entity" in state.columns:
            state = state[state["entity"] == ENTITY_CUSTOMER]
        previous = state.drop_duplicates("entity_key", keep="last")
        # One hashed index of the state's keys, probed by every slice (Series.isin on Arrow
        # strings would rebuild its lookup from the state for each slice).
        self._index = pd.Index(previous["entity_key"].astype(object).to_numpy())
        self._hash = previous["payload_hash"].astype(object).to_numpy()
        self._status = previous["last_status"].astype(object).to_numpy()
        self._wanted = {str(k) for k in customer_keys} if customer_keys else None
        self._seen: set[str] = set()

    def select(self, elements: pd.DataFrame) -> Changes:
        """The ``Changes`` of one slice of elements (``missing_keys`` stays empty)."""
        keys = elements["entity_key"]
        if self._wanted is not None:
            send = keys.isin(self._wanted)
            self._seen.update(keys[send])
            reason = pd.Series(FORCED, index=keys.index, dtype=object)
        else:
            position = self._index.get_indexer(keys.astype(object).to_numpy())
            known = pd.Series(position >= 0, index=keys.index)
            safe = np.where(position >= 0, position, 0)
            if len(self._index):
                old_hash = pd.Series(self._hash[safe], index=keys.index)
                old_status = pd.Series(self._status[safe], index=keys.index)
            else:
                old_hash = old_status = pd.Series(None, index=keys.index, dtype=object)
            retry = known & (old_status == STATUS_FAILED)
            changed = known & ~retry & (old_hash != elements["payload_hash"].astype(object))
            send = ~known | retry | changed
            reason = pd.Series(NEW, index=keys.index, dtype=object)
            reason[changed] = CHANGED
            reason[retry] = RETRY
        return Changes(to_send=elements[send].assign(change=reason[send]), unchanged=elements[~send])

    def missing_keys(self) -> list[str]:
        """Requested keys that were not among the elements (unknown or quarantined)."""
        if self._wanted is None:
            return []
        missing = sorted(self._wanted - self._seen)
        if missing:
            log.warning("%d requested customer key(s) are not among the valid customers, e.g. %s",
                        len(missing), missing[0])
        return missing


def select_changes(elements: pd.DataFrame, state: pd.DataFrame, *,
                   customer_keys: list[str] | None = None) -> Changes:
    """Send rows never sent, sent with another payload hash, or failed last time.

    ``customer_keys`` (non-empty) overrides that: exactly these keys are sent, whatever
    the state says, and nothing else. Keys that are not among the elements (unknown,
    quarantined) are reported in ``missing_keys``.
    """
    selector = ChangeSelector(state, customer_keys=customer_keys)
    selected = selector.select(elements)
    selected.missing_keys = selector.missing_keys()
    return selected
