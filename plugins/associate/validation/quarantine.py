"""Quarantine rows: steward-readable reasons (masked) for failed checks and for held-back dependents."""

from __future__ import annotations

import datetime as dt
import math
import re
import string

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


class _Fields:
    """Template fields for many rows at once: value, length, expectation kwargs, frame columns."""

    def __init__(self, frame: pd.DataFrame, failure: Failure, positions: np.ndarray, parameters: dict) -> None:
        self.frame, self.failure, self.positions, self.parameters = frame, failure, positions, parameters

    def column(self, name: str) -> list[str]:
        """Display strings of field ``name`` for every row."""
        column = self.failure.column
        if name == "value":
            return [display(column, v) for v in self._cells(column)]
        if name == "length":
            return [str(len(str(v))) if _present(v) else "0" for v in self._cells(column)]
        if name in self.failure.kwargs:
            arg = self.failure.kwargs[name]
            if isinstance(arg, dict) and "$PARAMETER" in arg:
                arg = self.parameters.get(arg["$PARAMETER"], arg["$PARAMETER"])
            return [display(name, arg, limit=None)] * len(self.positions)
        if name in self.frame.columns:
            return [display(name, v) for v in self._cells(name)]
        return ["{" + name + "?}"] * len(self.positions)  # a typo in a user-edited template must not stop the run

    def _cells(self, column: str) -> np.ndarray:
        if column not in self.frame.columns:
            return np.full(len(self.positions), None, dtype=object)
        # Take the failing rows first: converting a whole 1M-row column to objects costs seconds.
        return self.frame[column].iloc[self.positions].to_numpy(dtype=object)


def _present(value: object) -> bool:
    return display("", value) != EMPTY


def render_reasons(template: str, frame: pd.DataFrame, failure: Failure, positions: np.ndarray,
                   parameters: dict) -> list[str]:
    """Fill a reason template for each row; a malformed template is returned as written."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        return [template] * len(positions)
    fields = _Fields(frame, failure, positions, parameters)
    columns = {name: fields.column(name) for name in names}
    out = []
    for i in range(len(positions)):
        try:
            out.append(template.format_map({name: values[i] for name, values in columns.items()}))
        except (ValueError, IndexError, KeyError, AttributeError):
            out.append(template)
    return out


def entity_keys(frame: pd.DataFrame, key_column: str, positions: np.ndarray) -> list[str]:
    """Keys of rows; a row without a key is named by its input position."""
    keys = frame[key_column].iloc[positions].to_numpy(dtype=object)
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
            "reason": render_reasons(failure.reason, frame, failure, positions, parameters),
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
