"""Every staged format passed between tasks: its columns, their dtypes and an empty frame of it.

- ``ELEMENTS``: one built bulk element per customer, with its depth in the parent chain,
  its payload hash, its association (``hierarchy_code``, ``role_code``,
  ``company_external_id``; null without a company) and the profile's ``source`` and
  ``account_id`` (the bulk call's query); ``TO_SEND`` adds why it is sent (``change``)
  and how (``method``: ``POST`` registers a customer Capillary has no id of, ``PUT``
  updates one it has).
- ``CHUNK``: the elements one ``post`` task sends, numbered in batches (``batch_no``); a
  batch holds one (depth, method, source, account_id), so it is one call.
- ``OUTCOMES``: one row per customer or company sent or held back, with the association
  it was sent with when it succeeded (the sync state keeps it); ``COMPANY_OUTCOMES`` adds
  what ``ensure_companies`` did (``action``), a column the format allows.

Payload text is ``str`` (Arrow-backed: a payload costs its bytes, not a Python object);
outcome text is ``object``. pandas is imported inside functions: tasks import this
module at DAG parse time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from associate.masking import mask_text
from associate.tables import STATUS_FAILED

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, eq=False)
class StagedFormat:
    """A staged frame's columns, in order, with their dtypes."""

    name: str
    dtypes: Mapping[str, str]

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns, in order."""
        return tuple(self.dtypes)

    def empty(self) -> pd.DataFrame:
        """Return a frame of this format without rows."""
        import pandas as pd

        return pd.DataFrame({column: pd.Series([], dtype=dtype) for column, dtype in self.dtypes.items()})

    def check(self, frame: pd.DataFrame, source: str) -> None:
        """Raise ``ValueError`` when ``frame`` (read from ``source``) lacks a column of this format."""
        missing = [column for column in self.columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{self.name} {source} lacks columns {missing}")


ELEMENTS = StagedFormat("elements", {
    "entity_key": "str", "company_external_id": "str", "depth": "int64", "payload": "str", "payload_hash": "str",
    "hierarchy_code": "str", "role_code": "str", "source": "str", "account_id": "str",
})
TO_SEND = StagedFormat("elements to send", {**ELEMENTS.dtypes, "change": "str", "method": "str"})
CHUNK = StagedFormat("payload chunk", {
    "batch_no": "int64", "entity_key": "str", "payload": "str", "payload_hash": "str",
    "method": "str", "source": "str", "account_id": "str",
})
OUTCOMES = StagedFormat("outcomes", {
    "entity": "object", "entity_key": "object", "status": "object",
    "capillary_id": "Int64", "error_code": "Int64", "error_message": "object", "attempts": "int64",
    "synced_at": "datetime64[us, UTC]", "payload_hash": "object", "warnings": "object",
    "hierarchy_code": "object", "role_code": "object", "company_external_id": "object",
})

# Batch key: what one bulk call has in common (its method and query).
BATCH_KEY = ("depth", "method", "source", "account_id")
# payload_hash prefix of a customer POST found registered with other details (details kept):
# it never equals a real hash, so the next run sends the customer again, as an update.
DETAILS_KEPT_PREFIX = "details-kept:"
# error_message of a customer not sent because its parent failed earlier in the run (no code):
# the report counts these under PARENT_FAILED_LABEL.
PARENT_FAILED_PREFIX = "not sent: parent "
PARENT_FAILED_LABEL = "not sent: parent failed in this run"
COMPANY_OUTCOMES = StagedFormat("company outcomes", {**OUTCOMES.dtypes, "action": "object"})
# Column of a chunk's customer outcomes (bool): True where ``post`` recorded the row in the
# warehouse (``warehouse.record_batch``); ``write_back`` writes only the rows without it.
RECORDED = "recorded"

ELEMENT_COLUMNS = ELEMENTS.columns
CHUNK_COLUMNS = CHUNK.columns
OUTCOME_COLUMNS = OUTCOMES.columns


def typed_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """Return outcome rows with the format's dtypes (nullable ids and codes, UTC timestamps); extra columns kept."""
    import pandas as pd

    frame = frame.copy()
    for column, dtype in OUTCOMES.dtypes.items():
        values = frame[column] if column in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        if dtype == "Int64":
            frame[column] = pd.array([None if pd.isna(v) else int(v) for v in values], dtype=dtype)
        elif dtype == "object":
            frame[column] = values.astype(dtype).where(values.notna(), None)
        elif column == "synced_at":
            frame[column] = pd.to_datetime(values, utc=True).astype(dtype)
        else:
            frame[column] = values.astype(dtype)
    return frame[list(OUTCOMES.columns) + [c for c in frame.columns if c not in OUTCOMES.dtypes]]


def outcome_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Return outcome rows (dicts with the format's columns; missing ones are empty) as a typed frame.

    The same frame as ``typed_outcomes`` makes of them, built column by column from lists:
    a batch's hundred rows are framed a thousand times per 100k customers, in the senders'
    threads, and pandas' per-column operations cost more than the rows.
    """
    import pandas as pd

    rows = list(records)

    def empty(v: Any) -> bool:
        return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)

    columns: dict[str, Any] = {}
    for column, dtype in OUTCOMES.dtypes.items():
        values = [row.get(column) for row in rows]
        if dtype == "Int64":
            columns[column] = pd.array([None if empty(v) else int(v) for v in values], dtype=dtype)
        elif dtype == "object":
            columns[column] = pd.Series([None if empty(v) else v for v in values], dtype=object)
        elif column == "synced_at":
            columns[column] = pd.to_datetime(pd.Series(values, dtype=object), utc=True).astype(dtype)
        else:
            columns[column] = pd.Series(values).astype(dtype)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))


def outcome_record(entity: str, entity_key: str, status: str, *, capillary_id: int | None = None,
                   error_code: int | None = None, error_message: str | None = None, attempts: int = 0,
                   synced_at: Any = None, payload_hash: str | None = None,
                   warnings: Iterable[Mapping[str, Any]] = (),
                   association: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return one outcome row, its messages masked; a failed row carries no id and no association."""
    association = association if status != STATUS_FAILED and association else {}
    return {
        "entity": entity,
        "entity_key": str(entity_key),
        "status": status,
        "capillary_id": capillary_id if status != STATUS_FAILED else None,
        "error_code": error_code,
        "error_message": mask_text(error_message) if error_message else None,
        "attempts": int(attempts),
        "synced_at": synced_at,
        "payload_hash": payload_hash,
        "warnings": json.dumps([{"code": w.get("code"), "message": mask_text(w.get("message"))} for w in warnings],
                               ensure_ascii=False),
        "hierarchy_code": association.get("hierarchy_code"),
        "role_code": association.get("role_code"),
        "company_external_id": association.get("company_external_id"),
    }


def parent_failed_message(parent_key: str) -> str:
    """The outcome message of a customer held back because its parent (a warehouse key) failed."""
    return f"{PARENT_FAILED_PREFIX}{parent_key} failed in this run; it will be sent after its parent"


def element_association(element: Mapping[str, Any]) -> dict[str, Any]:
    """The (hierarchy_code, role_code, company_external_id) an element's ``associationDetails`` names."""
    details = element.get("associationDetails") if isinstance(element, Mapping) else None
    if not isinstance(details, Mapping):
        return {}
    company = details.get("fleetCompany") if isinstance(details.get("fleetCompany"), Mapping) else {}
    return {"hierarchy_code": details.get("hierarchyCode"), "role_code": details.get("roleCode"),
            "company_external_id": company.get("externalId")}


def format_counts(values: Iterable[str]) -> str:
    """Return how many of each value, e.g. ``2 failed, 5 success``, for a log line."""
    counts = Counter(values)
    return ", ".join(f"{n} {value}" for value, n in sorted(counts.items())) or "nothing sent"
