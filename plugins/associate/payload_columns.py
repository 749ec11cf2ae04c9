"""Customer columns of a slice as the plain values a payload element takes (text, ints, API dates, E.164 mobiles).

Converted once per slice of rows and column by column, because per-row conversion of a
million customers would dominate building their payloads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from associate.identifiers import e164_digits
from associate.tables import CUSTOMER_PUSH_TOKEN


def normalize_email(value: Any) -> str | None:
    """Trimmed and lower-cased: Capillary matches emails case-insensitively in practice."""
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def plain_values(series: pd.Series) -> list[Any]:
    """A column as a Python list with None for every kind of missing value."""
    return series.astype(object).where(series.notna(), None).tolist()


def _cap_datetimes(series: pd.Series) -> list[str | None]:
    """Timestamps as the API's ``YYYY-MM-DDTHH:MM:SS+00:00`` (UTC); naive values are UTC."""
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series.astype(object), utc=True, format="ISO8601", errors="coerce")
    elif getattr(series.dt, "tz", None) is None:
        series = series.dt.tz_localize("UTC")
    seconds = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    present = ~np.isnat(seconds)
    if present.any() and not (_FOUR_DIGIT_YEARS[0] <= seconds[present].min()
                              and seconds[present].max() < _FOUR_DIGIT_YEARS[1]):
        # strftime's own rendering of years outside 1000-9999 (numpy would pad them).
        text = series.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        return text.astype(object).where(series.notna(), None).tolist()
    # numpy renders whole seconds (floored, as strftime's %S) 5x faster than strftime.
    return [None if value == "NaT" else value + "+00:00"
            for value in np.datetime_as_string(seconds, unit="s").tolist()]


_FOUR_DIGIT_YEARS = (np.datetime64("1000-01-01T00:00:00", "s"), np.datetime64("10000-01-01T00:00:00", "s"))


def _dates(series: pd.Series) -> list[str | None]:
    out = []
    for value in plain_values(series):
        if value is None:
            out.append(None)
        elif hasattr(value, "isoformat"):
            out.append(value.isoformat()[:10])
        else:
            out.append(pd.Timestamp(str(value)).strftime("%Y-%m-%d"))
    return out


def _ints(series: pd.Series) -> list[int | None]:
    return [None if v is None else int(v) for v in plain_values(series)]


def e164_mobiles(series: pd.Series) -> tuple[list[str | None], set[int]]:
    """E.164 digits of a mobile column, and the positions of those present but written otherwise.

    Validation hands mobiles over as E.164 digits (read with the run's default region); a
    number in another form did not come through it, and the payload has no region to read
    it with: its row is left out with a reason, not sent under a guessed number.
    """
    raw = plain_values(series)
    mobiles = [e164_digits(v) for v in raw]
    unreadable = {i for i, (value, mobile) in enumerate(zip(raw, mobiles))
                  if mobile is None and value is not None and str(value).strip()}
    return mobiles, unreadable


UNREADABLE_MOBILE = "mobile is not E.164 digits (an optional '+' and digits only)"


class Columns:
    """Customer columns as plain lists, converted once per slice of rows."""

    def __init__(self, customers: pd.DataFrame):
        text = ("customer_key", "first_name", "last_name", "external_id", "card_number",
                "card_series_code", "card_status_label", "loyalty_type", "company_external_id",
                "role_code", "parent_customer_key", "till_code", "source", "account_id",
                "extended_fields", "custom_fields")
        for column in text:
            setattr(self, column, plain_values(customers[column]))
        self.customer_key = [str(k) for k in self.customer_key]
        self.mobile, self.unreadable_mobile = e164_mobiles(customers["mobile"])
        self.email = [normalize_email(v) for v in plain_values(customers["email"])]
        for column in ("program_id", "tier_number", "loyalty_points"):
            setattr(self, column, _ints(customers[column]))
        for column in ("registered_at", "tier_expiry_date", "points_expiry_date"):
            setattr(self, column, _cap_datetimes(customers[column]))
        self.last_viewed_date = _dates(customers["last_viewed_date"])
        token = customers.get(CUSTOMER_PUSH_TOKEN)
        self.push_token = [None if v is None or not str(v).strip() else str(v).strip() for v in plain_values(token)] \
            if token is not None else [None] * len(self.customer_key)


def text_column(values: list[str | None]) -> pd.Series:
    """Text (None: missing) as an Arrow-backed ``str`` column, handed to Arrow directly
    (``pd.Series(values, dtype="str")`` first copies them into an object array: 2x slower)."""
    import pyarrow as pa

    return pd.Series(pa.array(values, type=pa.large_string()), dtype="str")


def utf8_column(encoded: list[bytes]) -> pd.Series:
    """UTF-8 encoded text as a ``str`` column, its bytes joined into one Arrow buffer.

    A payload is never decoded into a Python string: the encoder's bytes are the
    column's data (4x faster than decoding and converting a million payloads).
    """
    import pyarrow as pa

    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    array = pa.LargeStringArray.from_buffers(len(encoded), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))
    return pd.Series(array, dtype="str")
