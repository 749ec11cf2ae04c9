"""Valid customer rows -> ``POST /v2/customers/bulk`` elements (wire-form JSON), and payload chunks.

Elements are built as plain dicts in exactly the form ``CustomerElement.to_api()`` gives
(tests check that), because validating a million pydantic models would dominate the run.
Each customer is its own element; a parent is referenced by its primary identifiers in
``associationDetails.parentCustomer``. ``childCustomers`` is not used: a child object can
carry only profiles and extended fields (no loyalty info, enrolments or role of its own),
so children go as full elements in later batches instead.

A slice's columns are converted once (``payload_columns``); slices of a large frame are built
by forked workers (``payload_workers``); the send order of the staged chunks and batches is
laid out by ``chunking``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from associate import json_codec
from associate.chunking import chunk_order
from associate.exceptions import PayloadError
from associate.payload_columns import (  # normalize_email: part of this module's interface
    UNREADABLE_MOBILE, Columns, e164_mobiles, normalize_email, plain_values, text_column, utf8_column,
)
from associate.payload_workers import build_processes, fork_pool, forget_worker_builder, pooled_slices
from associate.staged import ELEMENT_COLUMNS
from associate.tables import DEFAULT_SOURCE, METHOD_REGISTER, METHOD_UPDATE

log = logging.getLogger(__name__)

# lastViewedDate belongs to a mobilePush channel's ``meta`` (customers.md, "Sample Schema
# of mobilePush"); that channel needs a value, the app's push token, which the warehouse
# contract does not carry. Only rows with the optional push_token column get the channel
# (and the date); without a token the date is not sent (README, "Assumptions").


def canonical_bytes(element: dict[str, Any]) -> bytes:
    """The canonical JSON of an element as UTF-8: sorted keys, no spaces, text not escaped."""
    return json_codec.canonical(element)


def canonical_json(element: dict[str, Any]) -> str:
    """The canonical JSON of an element as text (what the payload column holds)."""
    return json_codec.canonical(element).decode("utf-8")


def payload_hash(payload: str) -> str:
    """sha256 (hex) of a canonical payload."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _json_object(value: Any, column: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    text = str(value).strip()
    if text in ("", "{}"):
        return {}
    try:
        parsed = json_codec.loads(text)
    except ValueError as exc:
        raise PayloadError(f"{column} is not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise PayloadError(f"{column} is not a JSON object")
    return parsed


def hierarchy_depths(keys: list[str], parents: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's parent position (-1: none, or not among ``keys``) and depth in its parent chain
    (root = 0; -1 on or below a cycle), as arrays in row order.

    Arrays by position, not a dict by key: a million keys' dict cost a second to build and
    ~100 MB that every forked worker inherited.
    """
    from associate.validation.graph import depths, parent_positions

    # A parent outside ``keys`` makes its child a root, as a missing parent does.
    parent_at = parent_positions(keys, parents)
    return parent_at, depths(parent_at)


def _primary_identifiers(mobile: str | None, email: str | None, external_id: str | None) -> list[dict]:
    identifiers = []
    if mobile:
        identifiers.append({"type": "mobile", "value": mobile})
    if email:
        identifiers.append({"type": "email", "value": email})
    if external_id:
        identifiers.append({"type": "externalId", "value": external_id})
    return identifiers


class _ParentIdentifiers:
    """What ``parentCustomer`` needs of every customer that is someone's parent, by row position."""

    def __init__(self, customers: pd.DataFrame, parent_at: np.ndarray):
        positions = np.unique(parent_at[parent_at >= 0])
        rows = customers[["mobile", "email", "external_id", "source", "account_id"]].take(positions)
        # Row position -> slot in the lists below (-1: nobody's parent).
        self._slot = np.full(len(customers), -1, dtype=np.int64)
        self._slot[positions] = np.arange(len(positions))
        self._mobile, self._unreadable_mobile = e164_mobiles(rows["mobile"])
        self._email = [normalize_email(v) for v in plain_values(rows["email"])]
        self._external_id = plain_values(rows["external_id"])
        self._source = plain_values(rows["source"])
        self._account_id = plain_values(rows["account_id"])

    def ref(self, position: int, key: str) -> dict:
        """The parent at a row position (its key ``key``) as ``parentCustomer``: one profile with its primary identifiers."""
        j = int(self._slot[position])
        if j in self._unreadable_mobile:
            raise PayloadError(f"parent {key}: {UNREADABLE_MOBILE}")
        identifiers = _primary_identifiers(self._mobile[j], self._email[j], self._external_id[j])
        if not identifiers:
            raise PayloadError(f"parent {key} has no primary identifier")
        profile: dict[str, Any] = {
            "identifiers": identifiers, "commChannels": [], "fields": {},
            "source": self._source[j] or DEFAULT_SOURCE,
        }
        if self._account_id[j] is not None:
            profile["accountId"] = self._account_id[j]
        return {"profiles": [profile], "extendedFields": {}}


class _Fragments:
    """Canonical JSON of parts many elements of a slice share, encoded once each (``msgspec.Raw``).

    Siblings share their parent's ``parentCustomer`` and most rows one of a few
    ``custom_fields`` / ``extended_fields`` texts: encoding them once per slice, not once
    per element, takes a third off building a payload. ``canonical_bytes`` sorts the keys
    of every object and inserts a ``Raw`` part verbatim, so a part encoded by it on its own
    gives the bytes the whole element would (``test_payload`` checks it). Held per slice:
    memory follows the slice.
    """

    def __init__(self):
        self._objects: dict[tuple[str, str], Any] = {}
        self._parents: dict[int, Any] = {}

    def json_object(self, value: Any, column: str) -> Any:
        """``_json_object`` of a text, as a canonical fragment (the parsed object where it cannot be one)."""
        if value is None or isinstance(value, dict):
            return _json_object(value, column)
        key = (column, value)
        fragment = self._objects.get(key)
        if fragment is None:
            fragment = self._objects[key] = _raw(_json_object(value, column))
        return fragment

    def parent(self, parent_ids: _ParentIdentifiers, position: int, key: str) -> Any:
        """``parent_ids.ref(position, key)`` as a canonical fragment."""
        fragment = self._parents.get(position)
        if fragment is None:
            fragment = self._parents[position] = _raw(parent_ids.ref(position, key))
        return fragment


def _raw(obj: dict) -> Any:
    """An object as a ``msgspec.Raw`` of its canonical JSON; the object itself where it does not encode
    (the whole element then fails to encode, with the reason, as it always did)."""
    if json_codec.Raw is None:  # pragma: no cover - msgspec is an Airflow dependency
        return obj
    try:
        return json_codec.Raw(json_codec.canonical(obj))
    except (ValueError, TypeError, OverflowError):
        return obj


def _element(c: Columns, i: int, hierarchy_of: dict[str, str | None], parent_ref: Any,
             fragments: _Fragments | None = None) -> dict:
    """One CustomerElement in wire form, for row ``i`` (``fragments``: a slice's shared parts)."""
    json_object = fragments.json_object if fragments is not None else _json_object
    if i in c.unreadable_mobile:
        raise PayloadError(UNREADABLE_MOBILE)
    identifiers = _primary_identifiers(c.mobile[i], c.email[i], c.external_id[i])
    if c.card_number[i]:
        card = {"type": "cardnumber", "value": c.card_number[i]}
        if c.card_series_code[i]:
            card["seriesCode"] = c.card_series_code[i]
        if c.card_status_label[i]:
            card["statusLabel"] = c.card_status_label[i]
        identifiers.append(card)
    if not identifiers:
        raise PayloadError("no identifier")
    channels = []
    if c.mobile[i]:
        channels.append({"type": "mobile", "value": c.mobile[i], "primary": True, "verified": False})
    if c.email[i]:
        channels.append({"type": "email", "value": c.email[i], "primary": True, "verified": False})
    if c.push_token[i]:
        push: dict[str, Any] = {"type": "mobilePush", "value": c.push_token[i], "primary": False, "verified": False}
        if c.last_viewed_date[i] is not None:
            push["meta"] = {"lastViewedDate": c.last_viewed_date[i]}
        channels.append(push)
    source = c.source[i] or DEFAULT_SOURCE
    profile: dict[str, Any] = {
        "identifiers": identifiers,
        "commChannels": channels,
        "fields": json_object(c.custom_fields[i], "custom_fields"),
        "source": source,
    }
    for name, value in (("firstName", c.first_name[i]), ("lastName", c.last_name[i]),
                        ("accountId", c.account_id[i]), ("createDate", c.registered_at[i]),
                        ("associatedWith", c.till_code[i])):
        if value is not None:
            profile[name] = value
    if not c.loyalty_type[i]:
        raise PayloadError("no loyalty_type")
    element: dict[str, Any] = {
        "profiles": [profile],
        "loyaltyInfo": {"loyaltyType": c.loyalty_type[i]},
        "loyaltyProgramEnrollments": [],
        "extendedFields": json_object(c.extended_fields[i], "extended_fields"),
    }
    if c.program_id[i] is not None:
        enrollment: dict[str, Any] = {"programId": c.program_id[i]}
        for name, value in (("tierNumber", c.tier_number[i]), ("loyaltyPoints", c.loyalty_points[i]),
                            ("tierExpiryDate", c.tier_expiry_date[i]),
                            ("pointsExpiryDate", c.points_expiry_date[i])):
            if value is not None:
                enrollment[name] = value
        element["loyaltyProgramEnrollments"].append(enrollment)
    company = c.company_external_id[i]
    if company is not None:
        hierarchy = hierarchy_of.get(company)
        if not hierarchy:
            raise PayloadError(f"company {company} is unknown or has no hierarchy_code")
        if not c.role_code[i]:
            raise PayloadError("no role_code")
        details: dict[str, Any] = {
            "hierarchyCode": hierarchy,
            "roleCode": c.role_code[i],
            "fleetCompany": {"externalId": company},
            "childCustomers": [],
        }
        if parent_ref is not None:
            details["parentCustomer"] = parent_ref
        element["associationDetails"] = details
    elif c.parent_customer_key[i] is not None:
        raise PayloadError("a parent without a company cannot be associated")
    return element


SLICE_ROWS = 25_000

def customer_hierarchy(customers: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's parent position and depth (``hierarchy_depths``), in row order."""
    keys = [str(k) for k in plain_values(customers["customer_key"])]
    return hierarchy_depths(keys, plain_values(customers["parent_customer_key"]))


def iter_elements(customers: pd.DataFrame, companies: pd.DataFrame, *,
                  slice_rows: int = SLICE_ROWS, processes: int | None = None, order: np.ndarray | None = None,
                  hierarchy: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[pd.DataFrame]:
    """Elements (see ``build_elements``) of at most ``slice_rows`` customers at a time, in row order (or ``order``'s).

    Only parent positions, hierarchy depths and the parents' identifiers are held for the whole frame, so
    memory follows the slice, not the warehouse: a million customers' payloads never sit
    in memory as Python objects at once. With more than one slice, slices are built by
    ``processes`` forked workers (default: the usable CPUs, at most 4; ``ASSOCIATE_PAYLOAD_PROCESSES``
    overrides it, 1 builds in this process). ``order``: row positions to build in (``send_order``;
    each worker takes its slice's rows); ``hierarchy``: ``customer_hierarchy(customers)``, if known.
    """
    if slice_rows < 1:
        raise ValueError("slice_rows must be at least 1")
    hierarchy_of = dict(zip(plain_values(companies["company_external_id"]), plain_values(companies["hierarchy_code"])))
    parent_at, depth = hierarchy if hierarchy is not None else customer_hierarchy(customers)
    parent_ids = _ParentIdentifiers(customers, parent_at)
    rows = max(len(customers), 1)
    slices = -(-rows // slice_rows)
    workers = min(build_processes(processes), slices)
    if workers > 1:
        # Equal slices, as many per worker: 53k rows are two halves, not 50k and 3k.
        slices = -(-slices // workers) * workers
    size = -(-rows // slices)
    starts = list(range(0, rows, size))
    build = _SliceBuilder(customers, size, hierarchy_of, parent_at, depth, parent_ids, order)
    pool = fork_pool(build, workers) if workers > 1 else None
    if pool is None:
        for start in starts:
            yield build(start)
        return
    try:
        yield from pooled_slices(pool, starts, workers)
        pool.close()  # every slice is in: the workers end on their own
        pool.join()
    finally:
        pool.terminate()
        forget_worker_builder()


class _SliceBuilder:
    """Builds the slice of customers starting at a row; what a forked worker inherits."""

    def __init__(self, customers: pd.DataFrame, slice_rows: int, hierarchy_of: dict,
                 parent_at: np.ndarray, depth: np.ndarray, parent_ids: _ParentIdentifiers,
                 order: np.ndarray | None = None):
        self.customers, self.slice_rows = customers, slice_rows
        self.hierarchy_of, self.parent_ids = hierarchy_of, parent_ids
        self.parent_at, self.depth, self.order = parent_at, depth, order

    def __call__(self, start: int) -> pd.DataFrame:
        stop = start + self.slice_rows
        # Parent positions stay the frame's: parent_ids is indexed by them.
        rows = slice(start, stop) if self.order is None else self.order[start:stop]
        customers = self.customers.iloc[rows]
        return _build_slice(customers, self.hierarchy_of,
                            self.parent_at[rows].tolist(), self.depth[rows].tolist(), self.parent_ids)


def _build_slice(customers: pd.DataFrame, hierarchy_of: dict[str, str | None], parent_at: list[int],
                 depth_of: list[int], parent_ids: _ParentIdentifiers) -> pd.DataFrame:
    """The elements of a slice of rows; ``parent_at`` and ``depth_of`` are those rows' (``hierarchy_depths``)."""
    c = Columns(customers)
    fragments = _Fragments()
    keys, companies_out, depths, payloads, hashes, skipped = [], [], [], [], [], []
    hierarchies, roles, sources, accounts = [], [], [], []
    for i, key in enumerate(c.customer_key):
        try:
            parent = c.parent_customer_key[i]
            ref = None
            if parent is not None:
                if parent_at[i] < 0:
                    raise PayloadError(f"parent {parent} is not among the valid customers")
                ref = fragments.parent(parent_ids, parent_at[i], parent)
            depth = depth_of[i]
            if depth < 0:
                raise PayloadError("the parent chain has a cycle")
            raw = canonical_bytes(_element(c, i, hierarchy_of, ref, fragments))
        except (PayloadError, ValueError, TypeError) as exc:
            skipped.append((key, str(exc)))
            continue
        keys.append(key)
        company = c.company_external_id[i]
        companies_out.append(company)
        hierarchies.append(hierarchy_of.get(company) if company is not None else None)
        roles.append(c.role_code[i] if company is not None else None)
        sources.append(c.source[i] or DEFAULT_SOURCE)
        accounts.append(c.account_id[i])
        depths.append(depth)
        payloads.append(raw)
        hashes.append(hashlib.sha256(raw).hexdigest())
    # Arrow-backed text: a payload costs its bytes, not a Python object each.
    frame = pd.DataFrame({
        "entity_key": text_column(keys),
        "company_external_id": text_column(companies_out),
        "depth": pd.Series(depths, dtype="int64"),
        "payload": utf8_column(payloads),
        "payload_hash": text_column(hashes),
        "hierarchy_code": text_column(hierarchies),
        "role_code": text_column(roles),
        "source": text_column(sources),
        "account_id": text_column(accounts),
    }, columns=list(ELEMENT_COLUMNS))
    frame.attrs["skipped"] = skipped
    return frame


def build_elements(customers: pd.DataFrame, companies: pd.DataFrame) -> pd.DataFrame:
    """One wire-form element per valid customer, with its hierarchy depth and payload hash.

    Rows that cannot be built (no parent in the frame, a cycle, a bad JSON field...) are
    left out and listed in ``frame.attrs["skipped"]`` as ``(customer_key, reason)``.
    """
    parts = list(iter_elements(customers, companies))
    skipped = [item for part in parts for item in part.attrs["skipped"]]
    for part in parts:
        part.attrs = {}
    frame = pd.concat(parts, ignore_index=True)
    if skipped:
        log.warning("%d customer(s) left out of the payloads, e.g. %s: %s", len(skipped), *skipped[0])
    frame.attrs["skipped"] = skipped
    return frame




def send_order(customers: pd.DataFrame, depth: np.ndarray, registered: np.ndarray, max_chunks: int,
               ) -> list[np.ndarray]:
    """Row positions of ``customers`` per chunk, in the order their elements are sent (each chunk in batch order).

    ``depth``: ``customer_hierarchy``'s; ``registered``: per row, whether the customer is
    updated (PUT) rather than registered. Elements built in this order (``iter_elements``'
    ``order``, the chunks one after another) are staged to send as ranges: record them with
    ``chunking.CHUNK_RANGES_KEY`` and ``chunking.stage_chunks`` copies nothing.
    """
    if not len(customers):
        return []
    source = customers["source"]
    frame = pd.DataFrame({
        "entity_key": customers["customer_key"].astype(str).to_numpy(),
        "company_external_id": customers["company_external_id"].to_numpy(),
        "depth": depth,
        "method": np.where(registered, METHOD_UPDATE, METHOD_REGISTER),
        # As an element gets them (_build_slice): a blank source is the default one.
        "source": source.where(source.notna() & (source.astype(str) != ""), DEFAULT_SOURCE).to_numpy(),
        "account_id": customers["account_id"].to_numpy(),
    })
    return chunk_order(frame, max_chunks)


def skipped_outcomes(skipped: list[tuple[str, str]], *, now: Any = None) -> pd.DataFrame:
    """Failed outcome rows (operator outcome format) for the ``(customer_key, reason)`` pairs the builder left out."""
    from associate.reconcile import not_sent_outcomes

    return not_sent_outcomes(
        [key for key, _ in skipped], [f"not sent: payload not built: {reason}" for _, reason in skipped], now=now,
    )
