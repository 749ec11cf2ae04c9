"""Outcome frames (staged by the operators) -> rows of the warehouse output tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from associate import staging
from associate.masking import mask_text
from associate.tables import (
    ENTITY_CUSTOMER, OUTPUT_TABLES, RESULTS_TABLE, STATE_TABLE, STATUS_FAILED, WARNINGS_TABLE,
)

OUTCOME_COLUMNS = ("entity", "entity_key", "status", "capillary_id", "error_code", "error_message",
                   "attempts", "synced_at", "payload_hash", "warnings")

Outcomes = pd.DataFrame | Iterable[pd.DataFrame | str]


def combine_outcomes(outcomes: Outcomes) -> pd.DataFrame:
    """One frame of outcomes from a frame, frames or staged URIs; one row per (entity, entity_key).

    A key reported twice (an element and the same customer as someone's child, or a retry)
    keeps its own element's row (the one with a payload hash), then the latest.
    """
    if isinstance(outcomes, pd.DataFrame):
        frames = [outcomes]
    else:
        frames = [staging.read_frame(o) if isinstance(o, str) else o for o in outcomes]
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return _empty_outcomes()
    # Extra columns (e.g. the company ``action``) are kept for whoever reads them.
    frame = pd.concat(frames, ignore_index=True)
    for column in OUTCOME_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["entity_key"] = frame["entity_key"].astype(str)
    frame["synced_at"] = pd.to_datetime(frame["synced_at"], utc=True)
    frame["_own"] = frame["payload_hash"].notna()
    frame = frame.sort_values(["_own", "synced_at"], kind="stable", na_position="first")
    frame = frame.drop_duplicates(["entity", "entity_key"], keep="last").drop(columns="_own")
    return frame.sort_index().reset_index(drop=True)


def not_sent_outcomes(entity_keys: Sequence[str], reasons: Sequence[str], *, entity: str = ENTITY_CUSTOMER,
                      now: Any = None) -> pd.DataFrame:
    """Failed outcome rows for entities the run could not send, each with its reason.

    Written back like any outcome, they give each such row a result with the reason and
    a ``failed`` state, so the next run tries again.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    n = len(entity_keys)
    return pd.DataFrame({
        "entity": entity,
        "entity_key": pd.Series(list(entity_keys), dtype=object),
        "status": STATUS_FAILED,
        "capillary_id": pd.array([None] * n, dtype="Int64"),
        "error_code": pd.array([None] * n, dtype="Int64"),
        "error_message": pd.Series(list(reasons), dtype=object),
        "attempts": pd.Series([0] * n, dtype="int64"),
        "synced_at": pd.Series([now] * n, dtype="datetime64[us, UTC]"),
        "payload_hash": pd.Series([None] * n, dtype=object),
        "warnings": pd.Series(["[]"] * n, dtype=object),
    }, columns=list(OUTCOME_COLUMNS))


def _empty_outcomes() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in OUTCOME_COLUMNS})
    frame["synced_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame


def _int64(series: pd.Series) -> pd.Series:
    return pd.Series(pd.array(pd.to_numeric(series.astype(object), errors="coerce"), dtype="Int64"),
                     index=series.index)


def _masked(series: pd.Series) -> pd.Series:
    # Operators mask already; masking again is harmless and guards the warehouse.
    return series.astype(object).map(lambda v: None if v is None or v != v else mask_text(v))


def results_from_outcomes(outcomes: Outcomes, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of associate_sync_results (one per entity sent) and associate_warnings (one per warning)."""
    frame = combine_outcomes(outcomes)
    results = pd.DataFrame({
        "run_id": run_id,
        "entity": frame["entity"].astype(object),
        "entity_key": frame["entity_key"].astype(object),
        "status": frame["status"].astype(object),
        "capillary_id": _int64(frame["capillary_id"]),
        "error_code": _int64(frame["error_code"]),
        "error_message": _masked(frame["error_message"]),
        "attempts": _int64(frame["attempts"]).fillna(0).astype("int64"),
        "synced_at": frame["synced_at"],
    }, columns=list(OUTPUT_TABLES[RESULTS_TABLE]))
    return results, warnings_from_outcomes(frame, run_id)


def warnings_from_outcomes(frame: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """One row per warning in the outcomes' ``warnings`` JSON lists."""
    rows = []
    has = frame["warnings"].notna() & ~frame["warnings"].astype(str).isin(("", "[]"))
    for entity, key, capillary_id, text in frame.loc[has, ["entity", "entity_key", "capillary_id", "warnings"]].itertuples(index=False):
        for warning in json.loads(text) if isinstance(text, str) else text:
            rows.append((run_id, entity, key, None if pd.isna(capillary_id) else int(capillary_id),
                         warning.get("code"), mask_text(warning.get("message") or "")))
    warnings = pd.DataFrame(rows, columns=list(OUTPUT_TABLES[WARNINGS_TABLE]), dtype=object)
    warnings["capillary_id"] = _int64(warnings["capillary_id"])
    warnings["code"] = _int64(warnings["code"])
    return warnings


def state_from_outcomes(outcomes: Outcomes, run_id: str) -> pd.DataFrame:
    """Rows of associate_sync_state: the last status and payload hash of every entity sent."""
    frame = combine_outcomes(outcomes)
    return pd.DataFrame({
        "entity": frame["entity"].astype(object),
        "entity_key": frame["entity_key"].astype(object),
        "payload_hash": frame["payload_hash"].astype(object).where(frame["payload_hash"].notna(), None),
        "capillary_id": _int64(frame["capillary_id"]),
        "last_status": frame["status"].astype(object),
        "last_run_id": run_id,
        "last_synced_at": frame["synced_at"],
    }, columns=list(OUTPUT_TABLES[STATE_TABLE]))
