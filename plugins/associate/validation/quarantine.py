"""Quarantine rows: steward-readable reasons (masked) for failed checks and for held-back dependents."""

from __future__ import annotations

import datetime as dt
import math
import re
import string
from collections.abc import Mapping

import numpy as np
import pandas as pd

from associate.masking import mask_mobile, mask_text, mask_value
from associate.validation.gx_runner import Failure

EMPTY = "(empty)"
MAX_SHOWN = 60
# Dates would otherwise look like phone numbers to mask_text; they carry no personal data.
_ISO_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?")


def display(column: str, value: object, limit: int | None = MAX_SHOWN) -> str:
    """A cell as a steward reads it: masked by column, empties named, long text cut."""
    if value is None or value is pd.NA or value is pd.NaT:
        return EMPTY
    if isinstance(value, float) and math.isnan(value):
        return EMPTY
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple, set)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    if _ISO_LIKE.fullmatch(text.strip()):
        return text.strip()
    base, _, derived = column.partition("__")
    if derived in ("", "norm"):
        if "mobile" in base:
            text = mask_mobile(text) or "(no digits)"
        else:
            text = mask_value(base, text)
    else:
        text = mask_text(text)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


class _RowFields(Mapping):
    """Template fields of one row: value, length, expectation kwargs, any column of the frame."""

    def __init__(self, frame: pd.DataFrame, failure: Failure, pos: int, parameters: dict) -> None:
        self.frame, self.failure, self.pos, self.parameters = frame, failure, pos, parameters

    def __getitem__(self, name: str) -> str:
        column = self.failure.column
        if name == "value":
            return display(column, self._cell(column))
        if name == "length":
            raw = self._cell(column)
            return str(len(str(raw))) if raw is not None else "0"
        if name in self.failure.kwargs:
            arg = self.failure.kwargs[name]
            if isinstance(arg, dict) and "$PARAMETER" in arg:
                arg = self.parameters.get(arg["$PARAMETER"], arg["$PARAMETER"])
            return display(name, arg, limit=None)
        if name in self.frame.columns:
            return display(name, self.frame.at[self.pos, name])
        return "{" + name + "?}"  # a typo in a user-edited template must not stop the run

    def _cell(self, column: str):
        if column in self.frame.columns:
            return self.frame.at[self.pos, column]
        return None

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def render_reason(template: str, frame: pd.DataFrame, failure: Failure, pos: int, parameters: dict) -> str:
    """Fill a reason template for one row; a malformed template is returned as written."""
    try:
        return string.Formatter().vformat(template, (), _RowFields(frame, failure, pos, parameters))
    except (ValueError, IndexError, KeyError, AttributeError):
        return template


def entity_keys(frame: pd.DataFrame, key_column: str, positions: np.ndarray) -> list[str]:
    """Keys of rows; a row without a key is named by its input position."""
    keys = frame[key_column].to_numpy(dtype=object)[positions]
    return [k if isinstance(k, str) else f"(row {p})" for k, p in zip(keys, positions)]


def failure_rows(entity: str, frame: pd.DataFrame, key_column: str, failures: list[Failure],
                 parameters: dict) -> pd.DataFrame:
    """One quarantine row per (row, failed expectation)."""
    parts = []
    for failure in failures:
        positions = np.unique(failure.positions)
        if not positions.size:
            continue
        parts.append(pd.DataFrame({
            "pos": positions,
            "entity": entity,
            "entity_key": entity_keys(frame, key_column, positions),
            "check": failure.check,
            "column_name": failure.column,
            "reason": [render_reason(failure.reason, frame, failure, int(p), parameters) for p in positions],
        }))
    return _concat(parts)


def dependent_rows(entity: str, frame: pd.DataFrame, key_column: str, check: str, column: str,
                   positions: np.ndarray, reasons: list[str]) -> pd.DataFrame:
    """Quarantine rows for rows held back because something they depend on was rejected."""
    if not len(positions):
        return _concat([])
    return pd.DataFrame({
        "pos": positions,
        "entity": entity,
        "entity_key": entity_keys(frame, key_column, positions),
        "check": check,
        "column_name": column,
        "reason": reasons,
    })


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    columns = ["pos", "entity", "entity_key", "check", "column_name", "reason"]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c != "pos" else np.int64) for c in columns})
    return pd.concat(parts, ignore_index=True)
