"""SQLite state of the sandbox: hierarchies, companies, customers and their identifiers."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from pydantic_core import to_json

from .memo import ReadMemo

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hierarchies (
    id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, definition TEXT NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS companies (
    id INTEGER PRIMARY KEY, external_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    hierarchy_code TEXT NOT NULL, extended_fields TEXT, parent_id INTEGER,
    is_active INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, modified_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY, loyalty_type TEXT NOT NULL, profile TEXT NOT NULL,
    enrollments TEXT NOT NULL DEFAULT '[]', extended_fields TEXT NOT NULL DEFAULT '{}',
    referral_code TEXT, created_at TEXT NOT NULL, modified_at TEXT NOT NULL,
    created_by TEXT, modified_by TEXT,
    hierarchy_id INTEGER, role_code TEXT, company_id INTEGER, parent_id INTEGER);
CREATE INDEX IF NOT EXISTS customers_parent ON customers(parent_id);
CREATE TABLE IF NOT EXISTS identifiers (
    type TEXT NOT NULL, value TEXT NOT NULL, customer_id INTEGER NOT NULL, extra TEXT,
    PRIMARY KEY (type, value)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identifiers_customer ON identifiers(customer_id);
CREATE TABLE IF NOT EXISTS refusals (
    identifiers TEXT PRIMARY KEY, id_type TEXT NOT NULL) WITHOUT ROWID;
"""

# Capillary ids are large integers; starting high keeps them from looking like row numbers.
FIRST_CUSTOMER_ID = 400_000_001
FIRST_COMPANY_ID = 5_000_001
FIRST_HIERARCHY_ID = 11
MAX_SQLITE_INT = 2**63 - 1


def now_iso() -> str:
    """The current UTC time as the API writes it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dumps(value: Any) -> str:
    """Compact JSON for a stored column: what json.dumps(ensure_ascii=False) writes compact, in a
    third of the time (a registration writes four columns and its identifiers' extras)."""
    return to_json(value, inf_nan_mode="constants").decode()


class Store:
    """One SQLite connection guarded by a lock: each request is one transaction."""

    def __init__(self, path: str):
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.RLock()
        self._depth = 0
        # Parsed definitions by code and by id: read on every association, written rarely.
        self._hierarchy_cache: dict[tuple[str, object], dict | None] = {}
        # While a bulk call runs (``memoised``): what it has read, by key (``memo``).
        self._memo: ReadMemo | None = None

    def close(self) -> None:
        """Close the connection (after the server stopped)."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit; nested uses become savepoints that roll back on their own."""
        with self._lock:
            conn = self._conn
            if self._depth == 0:
                conn.execute("BEGIN IMMEDIATE")
            else:
                conn.execute(f"SAVEPOINT sp{self._depth}")
            self._depth += 1
            try:
                yield conn
            except BaseException:
                self._depth -= 1
                self._hierarchy_cache.clear()
                if self._memo is not None:
                    self._memo.clear()
                if self._depth == 0:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute(f"ROLLBACK TO sp{self._depth}")
                    conn.execute(f"RELEASE sp{self._depth}")
                raise
            else:
                self._depth -= 1
                if self._depth == 0:
                    conn.execute("COMMIT")
                else:
                    conn.execute(f"RELEASE sp{self._depth}")

    @contextmanager
    def memoised(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose reads of customers, identifiers and companies are remembered (a bulk call)."""
        with self.transaction() as conn:
            self._memo = ReadMemo()
            try:
                yield conn
            finally:
                self._memo = None

    def _remembered(self, key: tuple, read):
        return read() if self._memo is None else self._memo.remembered(key, read)

    def prefetch(self, conn: sqlite3.Connection, identifiers: set[tuple[str, str]], company_ids: set[str]) -> None:
        """Read ahead, in a few statements, what a bulk call names (``ReadMemo.prefetch``)."""
        if self._memo is not None:
            self._memo.prefetch(conn, identifiers, company_ids)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Read access under the lock (the connection is shared by the server's threads)."""
        with self._lock:
            yield self._conn

    # --- meta -------------------------------------------------------------------------

    def signing_key(self) -> bytes:
        """The secret that signs OAuth tokens; kept in the db so tokens survive a restart."""
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='signing_key'").fetchone()
            if row:
                return bytes.fromhex(row["value"])
            key = secrets.token_bytes(32)
            conn.execute("INSERT INTO meta(key, value) VALUES ('signing_key', ?)", (key.hex(),))
            return key

    # --- hierarchies ------------------------------------------------------------------

    def hierarchy_by_code(self, conn: sqlite3.Connection, code: str) -> dict | None:
        """The active definition with this code, as stored (roles carry ids); do not modify it."""
        key = ("code", code)
        if key not in self._hierarchy_cache:
            row = conn.execute("SELECT id, definition FROM hierarchies WHERE code=? AND is_active=1",
                               (code,)).fetchone()
            self._hierarchy_cache[key] = self._hierarchy(row)
        return self._hierarchy_cache[key]

    def hierarchy_inactive(self, conn: sqlite3.Connection, code: str) -> bool:
        """Whether a definition with this code exists but is not active."""
        return conn.execute("SELECT 1 FROM hierarchies WHERE code=? AND is_active=0", (code,)).fetchone() is not None

    def hierarchy_by_id(self, conn: sqlite3.Connection, hierarchy_id: int) -> dict | None:
        """The active definition with this id."""
        if not 0 < hierarchy_id <= MAX_SQLITE_INT:
            return None
        key = ("id", hierarchy_id)
        if key not in self._hierarchy_cache:
            row = conn.execute("SELECT id, definition FROM hierarchies WHERE id=? AND is_active=1",
                               (hierarchy_id,)).fetchone()
            self._hierarchy_cache[key] = self._hierarchy(row)
        return self._hierarchy_cache[key]

    def hierarchies(self, conn: sqlite3.Connection) -> list[dict]:
        """Every active definition, oldest first."""
        rows = conn.execute("SELECT id, definition FROM hierarchies WHERE is_active=1 ORDER BY id").fetchall()
        return [self._hierarchy(r) for r in rows]

    @staticmethod
    def _hierarchy(row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        definition = json.loads(row["definition"])
        definition["id"] = row["id"]
        return definition

    def insert_hierarchy(self, conn: sqlite3.Connection, definition: dict) -> int:
        """Store a new definition, giving it and each of its roles an id."""
        row = conn.execute("SELECT COALESCE(MAX(id), ?) + 1 FROM hierarchies", (FIRST_HIERARCHY_ID - 1,)).fetchone()
        new_id = row[0]
        definition = dict(definition, id=new_id, isActive=True)
        definition["roles"] = [dict(role, id=new_id * 100 + i + 1) for i, role in enumerate(definition["roles"])]
        conn.execute("INSERT INTO hierarchies(id, code, definition) VALUES (?, ?, ?)",
                     (new_id, definition["code"], dumps(definition)))
        self._hierarchy_cache.clear()
        return new_id

    # --- companies --------------------------------------------------------------------

    def company_by_external_id(self, conn: sqlite3.Connection, external_id: str) -> sqlite3.Row | None:
        """The company row with this external id (a bulk call writes no company: remembered in it)."""
        return self._remembered(("company", external_id), lambda: conn.execute(
            "SELECT * FROM companies WHERE external_id=?", (external_id,)).fetchone())

    def company_by_id(self, conn: sqlite3.Connection, company_id: int) -> sqlite3.Row | None:
        """The company row with this id."""
        if not 0 < company_id <= MAX_SQLITE_INT:
            return None
        return self._remembered(("company_id", company_id), lambda: conn.execute(
            "SELECT * FROM companies WHERE id=?", (company_id,)).fetchone())

    def insert_company(self, conn: sqlite3.Connection, *, external_id: str, name: str, hierarchy_code: str,
                       extended_fields: dict | None, parent_id: int | None) -> int:
        """Store a new company and return its id."""
        new_id = conn.execute("SELECT COALESCE(MAX(id), ?) + 1 FROM companies", (FIRST_COMPANY_ID - 1,)).fetchone()[0]
        stamp = now_iso()
        conn.execute(
            "INSERT INTO companies(id, external_id, name, hierarchy_code, extended_fields, parent_id,"
            " created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (new_id, external_id, name, hierarchy_code, dumps(extended_fields or {}), parent_id, stamp, stamp))
        return new_id

    # --- customers --------------------------------------------------------------------

    def customer(self, conn: sqlite3.Connection, customer_id: int) -> sqlite3.Row | dict | None:
        """The customer row with this id (read by column name; do not modify it)."""
        return self._remembered(("customer", customer_id), lambda: conn.execute(
            "SELECT * FROM customers WHERE id=?", (customer_id,)).fetchone())

    def insert_customer(self, conn: sqlite3.Connection, row: dict) -> None:
        """Store a new customer: ``row`` has every column but the association ones (all null)."""
        row = dict(row, hierarchy_id=None, role_code=None, company_id=None, parent_id=None)
        conn.execute(f"INSERT INTO customers({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))
        if self._memo is not None:
            self._memo.customer_inserted(row)

    def update_customer(self, conn: sqlite3.Connection, customer_id: int, **columns: Any) -> None:
        """Set columns of a stored customer."""
        old = self.customer(conn, customer_id) if self._memo is not None and "parent_id" in columns else None
        conn.execute(f"UPDATE customers SET {', '.join(f'{name}=?' for name in columns)} WHERE id=?",
                     (*columns.values(), customer_id))
        if self._memo is not None:
            self._memo.customer_updated(customer_id, old, columns)

    def owner_of(self, conn: sqlite3.Connection, id_type: str, value: str) -> int | None:
        """The id of the customer holding this identifier."""
        def read() -> int | None:
            row = conn.execute("SELECT customer_id FROM identifiers WHERE type=? AND value=?",
                               (id_type, value)).fetchone()
            return row[0] if row else None
        return self._remembered(("owner", id_type, value), read)

    def identifiers_of(self, conn: sqlite3.Connection, customer_id: int) -> list[sqlite3.Row]:
        """Every identifier of a customer."""
        return self._remembered(("identifiers", customer_id), lambda: conn.execute(
            "SELECT type, value, extra FROM identifiers WHERE customer_id=? ORDER BY type, value",
            (customer_id,)).fetchall())

    def add_identifiers(self, conn: sqlite3.Connection, customer_id: int,
                        identifiers: list[tuple[str, str, Any]], *, new: bool = False) -> None:
        """Give a customer these ``(type, value, extra)`` identifiers; one another customer holds stays theirs."""
        rows = [(t, v, customer_id, dumps(extra) if extra else None) for t, v, extra in identifiers]
        conn.executemany("INSERT OR IGNORE INTO identifiers(type, value, customer_id, extra) VALUES (?, ?, ?, ?)", rows)
        if self._memo is not None:
            self._memo.identifiers_added(customer_id, rows, new)

    def refused_type(self, conn: sqlite3.Connection, key: str) -> str | None:
        """The identifier type a set of identifiers was first refused for (conflict), if it was."""
        row = conn.execute("SELECT id_type FROM refusals WHERE identifiers=?", (key,)).fetchone()
        return row[0] if row else None

    def record_refusal(self, conn: sqlite3.Connection, key: str, id_type: str) -> None:
        """Remember the first conflict of a set of identifiers (a later one does not replace it)."""
        conn.execute("INSERT OR IGNORE INTO refusals(identifiers, id_type) VALUES (?, ?)", (key, id_type))

    def next_customer_id(self, conn: sqlite3.Connection) -> int:
        """The id the next registered customer gets."""
        return self._remembered(("next_customer_id",), lambda: conn.execute(
            "SELECT COALESCE(MAX(id), ?) + 1 FROM customers", (FIRST_CUSTOMER_ID - 1,)).fetchone()[0])

    def child_count(self, conn: sqlite3.Connection, parent_id: int, excluding: int | None = None) -> int:
        """How many customers have this parent (not counting ``excluding``)."""
        if self._memo is None:
            return conn.execute("SELECT COUNT(*) FROM customers WHERE parent_id=? AND id IS NOT ?",
                                (parent_id, excluding)).fetchone()[0]
        count = self._remembered(("children", parent_id), lambda: conn.execute(
            "SELECT COUNT(*) FROM customers WHERE parent_id=?", (parent_id,)).fetchone()[0])
        if excluding is not None:
            excluded = self.customer(conn, excluding)
            if excluded is not None and excluded["parent_id"] == parent_id:
                count -= 1
        return count

    def counts(self) -> dict[str, int]:
        """Customers, companies, associations and hierarchies stored."""
        with self.reading() as conn:
            return {
                "customers": conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0],
                "companies": conn.execute("SELECT COUNT(*) FROM companies").fetchone()[0],
                "associations": conn.execute("SELECT COUNT(*) FROM customers WHERE role_code IS NOT NULL").fetchone()[0],
                "hierarchies": conn.execute("SELECT COUNT(*) FROM hierarchies").fetchone()[0],
            }
