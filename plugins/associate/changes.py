"""Change detection: which built elements to send (and how), by payload hash against the sync state.

A customer the state has a Capillary id of is updated (``PUT``), any other is registered
(``POST``). A registered customer whose stored association (hierarchy, role, company of
its last successful send) differs from the new one is not sent: Capillary refuses the move
(1626/1627/1628), so it is held back with that code and a reason a data steward can act
on. A forced run (``customer_keys``) skips that check and lets the API decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from associate.tables import (
    CODE_COMPANY_CHANGE, CODE_HIERARCHY_CHANGE, CODE_ROLE_CHANGE, ENTITY_CUSTOMER, METHOD_REGISTER,
    METHOD_UPDATE, STATE_ASSOCIATION, STATUS_FAILED,
)

log = logging.getLogger(__name__)

# Why a row is sent (column ``change`` of ``to_send``).
NEW, CHANGED, RETRY, FORCED = "new", "changed", "retry", "forced"

# Association parts that cannot move once set, in the order their code is chosen.
IMMOVABLE = (("hierarchy_code", "hierarchy", CODE_HIERARCHY_CHANGE),
             ("role_code", "role", CODE_ROLE_CHANGE),
             ("company_external_id", "company", CODE_COMPANY_CHANGE))
BLOCKED_COLUMNS = ("entity_key", "error_code", "reason")


@dataclass
class Changes:
    """Elements to send (with a ``change`` reason and a ``method``), elements left alone, and held back.

    ``blocked`` lists registered customers whose association would move:
    ``entity_key``, ``error_code`` (1626/1627/1628) and ``reason``.
    """

    to_send: pd.DataFrame
    unchanged: pd.DataFrame
    missing_keys: list[str] = field(default_factory=list)
    blocked: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(BLOCKED_COLUMNS)))

    def counts(self) -> dict[str, int]:
        """How many rows per reason, plus ``unchanged`` and ``association_blocked`` (and keys not found)."""
        counts = {reason: int(n) for reason, n in self.to_send["change"].value_counts().items()}
        counts["unchanged"] = len(self.unchanged)
        if len(self.blocked):
            counts["association_blocked"] = len(self.blocked)
        if self.missing_keys:
            counts["missing"] = len(self.missing_keys)
        return counts


class ChangeSelector:
    """Selects what to send slice by slice against one read of the sync state.

    Rules (``select_changes``): send rows never sent, sent with another payload hash, or
    failed last time, except registered customers whose association would move (held
    back, ``Changes.blocked``); with ``customer_keys`` (non-empty), exactly those keys and
    nothing else, unchecked. Keys asked for that no slice held are reported by
    ``missing_keys()``. Every row sent gets ``method``: PUT with a Capillary id, else POST.
    """

    def __init__(self, state: pd.DataFrame, *, customer_keys: list[str] | None = None):
        if "entity" in state.columns:
            state = state[state["entity"] == ENTITY_CUSTOMER]
        previous = state.drop_duplicates("entity_key", keep="last")
        # One hashed index of the state's keys, probed by every slice (Series.isin on Arrow
        # strings would rebuild its lookup from the state for each slice).
        self._index = pd.Index(previous["entity_key"].astype(object).to_numpy())
        self._stored = {column: _objects(previous, column)
                        for column in ("payload_hash", "last_status", "capillary_id", *STATE_ASSOCIATION)}
        self._wanted = {str(k) for k in customer_keys} if customer_keys else None
        self._seen: set[str] = set()

    def _column(self, column: str, position: np.ndarray, index: pd.Index) -> pd.Series:
        """A stored column for the probed rows (None where the key is not in the state)."""
        if not len(self._index):
            return pd.Series(None, index=index, dtype=object)
        values = self._stored[column][np.where(position >= 0, position, 0)]
        return pd.Series(values, index=index, dtype=object).where(position >= 0, None)

    def before_payloads(self, keys: pd.Series) -> tuple[np.ndarray, int]:
        """What the state tells of ``keys`` before their payloads are built.

        Per key, whether it is registered (its element is sent as an update, PUT); and how
        many keys are sent whatever their payloads: never sent, or failed last time (none
        is sure in a forced run: only the keys asked for are sent).
        """
        if not len(self._index):  # a first sync: nobody is registered, everybody is sent
            return np.zeros(len(keys), dtype=bool), 0 if self._wanted is not None else len(keys)
        position = self._index.get_indexer(keys.astype(str).astype(object).to_numpy())
        registered = self._column("capillary_id", position, keys.index).notna().to_numpy()
        if self._wanted is not None:
            return registered, 0
        failed = (self._column("last_status", position, keys.index) == STATUS_FAILED).to_numpy()
        return registered, int((position < 0).sum() + failed.sum())

    def select(self, elements: pd.DataFrame) -> Changes:
        """The ``Changes`` of one slice of elements (``missing_keys`` stays empty)."""
        keys = elements["entity_key"]
        position = self._index.get_indexer(keys.astype(object).to_numpy())
        registered = self._column("capillary_id", position, keys.index).notna()
        method = pd.Series(np.where(registered, METHOD_UPDATE, METHOD_REGISTER), index=keys.index, dtype=object)
        blocked = pd.DataFrame(columns=list(BLOCKED_COLUMNS))
        if self._wanted is not None:
            send = keys.isin(self._wanted)
            self._seen.update(keys[send])
            reason = pd.Series(FORCED, index=keys.index, dtype=object)
        else:
            known = pd.Series(position >= 0, index=keys.index)
            old_hash = self._column("payload_hash", position, keys.index)
            retry = known & (self._column("last_status", position, keys.index) == STATUS_FAILED)
            changed = known & ~retry & (old_hash != elements["payload_hash"].astype(object))
            send = ~known | retry | changed
            reason = pd.Series(NEW, index=keys.index, dtype=object)
            reason[changed] = CHANGED
            reason[retry] = RETRY
            blocked = self._moves(elements.loc[send & registered], position[np.asarray(send & registered)])
            send = send & ~keys.isin(blocked["entity_key"])
        to_send = elements[send].assign(change=reason[send], method=method[send])
        return Changes(to_send=to_send, unchanged=elements[~send & ~keys.isin(blocked["entity_key"])],
                       blocked=blocked)

    def _moves(self, elements: pd.DataFrame, position: np.ndarray) -> pd.DataFrame:
        """Registered customers whose association differs from the stored one: key, code, reason."""
        moves: dict[str, list[tuple[str, int, str, str]]] = {}
        for column, name, code in IMMOVABLE:
            if column not in elements.columns:
                continue
            old = self._column(column, position, elements.index)
            new = elements[column].astype(object).where(elements[column].notna(), None)
            # A null stored value (state written before associations were kept) or a
            # customer now without a company: nothing to compare, the API decides.
            differs = old.notna() & new.notna() & (old != new)
            for key, was, now in zip(elements["entity_key"][differs], old[differs], new[differs]):
                moves.setdefault(str(key), []).append((name, code, str(was), str(now)))
        rows = [(key, found[0][1], association_reason(found)) for key, found in moves.items()]
        return pd.DataFrame(rows, columns=list(BLOCKED_COLUMNS))

    def missing_keys(self) -> list[str]:
        """Requested keys that were not among the elements (unknown or quarantined)."""
        if self._wanted is None:
            return []
        missing = sorted(self._wanted - self._seen)
        if missing:
            log.warning("%d requested customer key(s) are not among the valid customers, e.g. %s",
                        len(missing), missing[0])
        return missing


def association_reason(moves: list[tuple[str, int, str, str]]) -> str:
    """What a data steward reads for a held-back move: ``(part, code, old, new)`` per change."""
    what = " and ".join(f"{name} change {old} -> {new}" for name, _code, old, new in moves)
    verb = "is" if len(moves) == 1 else "are"
    return (f"{what} {verb} not allowed through this API: move the customer in Capillary first, "
            "then send it with customer_keys")


def _objects(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A state column as an object array, None where missing (or where the state lacks the column)."""
    if column not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    values = frame[column].astype(object)
    return values.where(values.notna(), None).to_numpy()


def select_changes(elements: pd.DataFrame, state: pd.DataFrame, *,
                   customer_keys: list[str] | None = None) -> Changes:
    """Send rows never sent, sent with another payload hash, or failed last time.

    ``customer_keys`` (non-empty) overrides that: exactly these keys are sent, whatever
    the state says, and nothing else. Keys that are not among the elements (unknown,
    quarantined) are reported in ``missing_keys``.
    """
    selector = ChangeSelector(state, customer_keys=customer_keys)
    selected = selector.select(elements)  # one slice: the whole frame
    selected.missing_keys = selector.missing_keys()
    return selected
