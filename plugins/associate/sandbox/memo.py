"""What a bulk call has read from the store, by key, so that its 100 elements do not read it again.

Keys: ``("customer", id)`` the row, ``("owner", type, value)`` the id holding an identifier (None:
nobody), ``("identifiers", id)`` a customer's identifier rows in (type, value) order,
``("children", id)`` how many customers have this parent, ``("company", external_id)`` and
``("company_id", id)`` the company row, ``("next_customer_id",)``.

A bulk call holds the store's lock, so it is the only writer while the memo lives; its writes
tell the memo (``customer_updated``, ``identifiers_added``) and a rolled-back element clears it.
Without the memo a call of 100 associated customers runs ~1,800 statements, with it ~650.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterator

# Values per IN list: SQLite allows 32,766 variables; a batch of 100 names a few hundred.
IN_CHUNK = 500
# Levels of ancestors read ahead (the cycle check walks them); deeper ones are read when met.
ANCESTOR_LEVELS = 8


def _chunks(values: list) -> Iterator[list]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


class ReadMemo(dict):
    """Store reads of one bulk call by key (see the module's doc)."""

    def remembered(self, key: tuple, read: Callable[[], Any]) -> Any:
        """The remembered value of ``key``, read once."""
        if key not in self:
            self[key] = read()
        return self[key]

    def prefetch(self, conn: sqlite3.Connection, identifiers: set[tuple[str, str]], company_ids: set[str]) -> None:
        """Read in a few statements what the call would read one by one: the owners of its
        identifiers, those customers with their ancestors, children counts and identifiers, and
        the companies it names."""
        by_type: dict[str, list[str]] = {}
        for id_type, value in identifiers:
            if ("owner", id_type, value) not in self:
                by_type.setdefault(id_type, []).append(value)
        for id_type, values in by_type.items():
            # One type per statement: "(type, value) IN (VALUES ...)" would scan the table.
            for chunk in _chunks(values):
                self.update({("owner", id_type, v): None for v in chunk})
                self.update({("owner", id_type, v): owner for v, owner in conn.execute(
                    f"SELECT value, customer_id FROM identifiers WHERE type=? AND value IN ({_marks(chunk)})",
                    (id_type, *chunk))})
        owners = {self[("owner", *pair)] for pair in identifiers} - {None}
        level = owners
        for _ in range(ANCESTOR_LEVELS):
            self._customers(conn, level)
            level = {self[("customer", c)]["parent_id"] for c in level if self.get(("customer", c)) is not None}
            level = {c for c in level if c is not None and ("customer", c) not in self}
            if not level:
                break
        wanted = [c for c in owners if ("children", c) not in self]
        for chunk in _chunks(wanted):
            self.update({("children", c): 0 for c in chunk})
            self.update({("children", parent): n for parent, n in conn.execute(
                f"SELECT parent_id, COUNT(*) FROM customers WHERE parent_id IN ({_marks(chunk)}) GROUP BY parent_id",
                chunk)})
        wanted = [c for c in owners if ("identifiers", c) not in self]
        for chunk in _chunks(wanted):
            found: dict[int, list] = {c: [] for c in chunk}
            for row in conn.execute(f"SELECT customer_id, type, value, extra FROM identifiers WHERE customer_id IN "
                                    f"({_marks(chunk)}) ORDER BY customer_id, type, value", chunk):
                found[row["customer_id"]].append(row)
            self.update({("identifiers", c): rows for c, rows in found.items()})
        wanted = [e for e in company_ids if ("company", e) not in self]
        for chunk in _chunks(wanted):
            self.update({("company", e): None for e in chunk})
            for row in conn.execute(f"SELECT * FROM companies WHERE external_id IN ({_marks(chunk)})", chunk):
                self[("company", row["external_id"])] = self[("company_id", row["id"])] = row

    def _customers(self, conn: sqlite3.Connection, ids: set[int]) -> None:
        wanted = [c for c in ids if ("customer", c) not in self]
        for chunk in _chunks(wanted):
            self.update({("customer", c): None for c in chunk})
            for row in conn.execute(f"SELECT * FROM customers WHERE id IN ({_marks(chunk)})", chunk):
                self[("customer", row["id"])] = row

    def customer_inserted(self, row: dict) -> None:
        """A new customer (every column): no children yet, and the next id follows it."""
        self[("customer", row["id"])] = row
        self[("children", row["id"])] = 0
        self[("next_customer_id",)] = row["id"] + 1

    def customer_updated(self, customer_id: int, old, columns: dict) -> None:
        """Columns of a customer were set; ``old`` is its row before (None if not at hand)."""
        if old is not None and "parent_id" in columns and old["parent_id"] != columns["parent_id"]:
            for parent, change in ((old["parent_id"], -1), (columns["parent_id"], 1)):
                if ("children", parent) in self:
                    self[("children", parent)] += change
        if ("customer", customer_id) in self:
            self[("customer", customer_id)] = {**self[("customer", customer_id)], **columns}

    def identifiers_added(self, customer_id: int, rows: list[tuple[str, str, int, str | None]], new: bool) -> None:
        """``(type, value, customer_id, extra)`` rows were inserted unless another customer held them."""
        self.pop(("identifiers", customer_id), None)
        if new:
            # A new customer holds exactly these (its element matched no owner of any of them).
            self[("identifiers", customer_id)] = sorted(
                ({"type": t, "value": v, "extra": extra} for t, v, _, extra in rows),
                key=lambda i: (i["type"], i["value"]))
        for t, v, _, _ in rows:
            if self.get(("owner", t, v), 0) is None:
                self[("owner", t, v)] = customer_id
