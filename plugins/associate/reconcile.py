"""Outcome frames (``staged.OUTCOMES``) -> rows of the warehouse output tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from associate import staged, staging
from associate.masking import mask_text
from associate.tables import (
    ENTITY_CUSTOMER, OUTPUT_TABLES, RESULTS_TABLE, STATE_ASSOCIATION, STATE_TABLE, STATUS_FAILED, WARNINGS_TABLE,
)

Outcomes = pd.DataFrame | Iterable[pd.DataFrame | str]


def combine_outcomes(outcomes: Outcomes) -> pd.DataFrame:
    """Return one frame of outcomes from a frame, frames or staged URIs; one row per (entity, entity_key).

    A key reported twice (held back and sent, or sent again by a retry) keeps the row of
    its own element (the one with a payload hash), then the latest.
    """
    if isinstance(outcomes, pd.DataFrame):
        frames = [outcomes]
    else:
        frames = [staging.read_frame(o) if isinstance(o, str) else o for o in outcomes]
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return staged.OUTCOMES.empty()
    # Extra columns (e.g. the company ``action``) are kept for whoever reads them.
    frame = pd.concat(frames, ignore_index=True)
    for column in staged.OUTCOMES.columns:
        if column not in frame.columns:
            frame[column] = None
    frame["entity_key"] = frame["entity_key"].astype(str)
    frame["synced_at"] = pd.to_datetime(frame["synced_at"], utc=True)
    # Keys alone first: one text column hashes in a third of the time of the pair.
    if not frame["entity_key"].duplicated().any() or not frame.duplicated(["entity", "entity_key"]).any():
        return frame  # one row per key already (answered batches): nothing to choose
    frame["_own"] = frame["payload_hash"].notna()
    frame = frame.sort_values(["_own", "synced_at"], kind="stable", na_position="first")
    frame = frame.drop_duplicates(["entity", "entity_key"], keep="last").drop(columns="_own")
    return frame.sort_index().reset_index(drop=True)


def with_recorded_chunk_keys(others: Outcomes, chunk_uris: list[str]) -> pd.DataFrame | None:
    """``others`` combined, with only the keys of chunks whose every row was recorded; None if a chunk was not.

    What ``write_back`` needs when every chunk row is recorded, once, and none of the other
    outcomes (companies, held-back customers) names its key: the chunks' other columns are
    not needed (a million rows of them took ~1.5 s to read). Otherwise None: read them all.
    """
    chunks = []
    for uri in chunk_uris:
        if staged.RECORDED not in staging.column_names(uri):
            return None
        chunks.append(staging.read_columns(uri, ["entity", "entity_key", staged.RECORDED]))
    if not chunks:
        return None
    keys = pd.concat(chunks, ignore_index=True)
    keys["entity_key"] = keys["entity_key"].astype(str)
    if not keys[staged.RECORDED].eq(True).all():
        return None
    # Keys alone first, as combine_outcomes: cheaper than the (entity, key) pairs.
    if keys["entity_key"].duplicated().any() and keys.duplicated(["entity", "entity_key"]).any():
        return None
    combined = combine_outcomes(others)
    for entity, rows in combined.groupby("entity"):
        if keys.loc[keys["entity"] == entity, "entity_key"].isin(rows["entity_key"].astype(str)).any():
            return None
    return pd.concat([combined, keys], ignore_index=True)


def not_sent_outcomes(entity_keys: Sequence[str], reasons: Sequence[str], *, entity: str = ENTITY_CUSTOMER,
                      now: Any = None, codes: Sequence[int | None] | None = None) -> pd.DataFrame:
    """Failed outcome rows for entities the run could not send, each with its reason (and code, if any).

    Written back like any outcome, they give each such row a result with the reason and
    a ``failed`` state, so the next run tries again.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    codes = list(codes) if codes is not None else [None] * len(entity_keys)
    return staged.outcome_frame(
        staged.outcome_record(entity, key, STATUS_FAILED, error_code=code, error_message=reason, synced_at=now)
        for key, reason, code in zip(entity_keys, reasons, codes)
    )


def _objects(series: pd.Series) -> list[Any]:
    """A column's values as a list, None where missing."""
    return [None if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v) else v
            for v in series.tolist()]


def _int64(series: pd.Series) -> pd.Series:
    return pd.Series(pd.array(pd.to_numeric(series.astype(object), errors="coerce"), dtype="Int64"),
                     index=series.index)


def _masked(series: pd.Series) -> pd.Series:
    # Outcome rows are masked already; masking again is harmless and guards the warehouse.
    return series.astype(object).map(lambda v: None if v is None or v != v else mask_text(v))


def records_from_outcomes(outcomes: Outcomes, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``results_from_outcomes`` and ``state_from_outcomes`` of the same outcomes, combined once."""
    frame = combine_outcomes(outcomes)
    return (*_results(frame, run_id), _state(frame, run_id))


def results_from_outcomes(outcomes: Outcomes, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of associate_sync_results (one per entity sent) and associate_warnings (one per warning)."""
    return _results(combine_outcomes(outcomes), run_id)


def _results(frame: pd.DataFrame, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    # Plain lists: most rows have no warning, and a batch's hundred rows are read once per batch.
    texts = _objects(frame["warnings"])
    with_warnings = [i for i, text in enumerate(texts) if text is not None and str(text) not in ("", "[]")]
    if with_warnings:
        entities, keys, ids = (frame[c].tolist() for c in ("entity", "entity_key", "capillary_id"))
        for i in with_warnings:
            text, capillary_id = texts[i], ids[i]
            for warning in json.loads(text) if isinstance(text, str) else text:
                rows.append((run_id, entities[i], keys[i], None if pd.isna(capillary_id) else int(capillary_id),
                             warning.get("code"), mask_text(warning.get("message") or "")))
    warnings = pd.DataFrame(rows, columns=list(OUTPUT_TABLES[WARNINGS_TABLE]), dtype=object)
    warnings["capillary_id"] = _int64(warnings["capillary_id"])
    warnings["code"] = _int64(warnings["code"])
    return warnings


def state_from_outcomes(outcomes: Outcomes, run_id: str) -> pd.DataFrame:
    """Rows of associate_sync_state: the last status and payload hash of every entity sent.

    The association columns are those of a successful send, null otherwise (the upsert
    then keeps the stored association).
    """
    return _state(combine_outcomes(outcomes), run_id)


def _state(frame: pd.DataFrame, run_id: str) -> pd.DataFrame:
    def text(column: str) -> pd.Series:
        return pd.Series(_objects(frame[column]), index=frame.index, dtype=object)

    return pd.DataFrame({
        "entity": frame["entity"].astype(object),
        "entity_key": frame["entity_key"].astype(object),
        "payload_hash": frame["payload_hash"].astype(object).where(frame["payload_hash"].notna(), None),
        "capillary_id": _int64(frame["capillary_id"]),
        "last_status": frame["status"].astype(object),
        "last_run_id": run_id,
        "last_synced_at": frame["synced_at"],
        **{column: text(column) for column in STATE_ASSOCIATION},
    }, columns=list(OUTPUT_TABLES[STATE_TABLE]))
