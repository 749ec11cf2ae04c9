"""JSON in and out of the pipeline's hot paths: msgspec where installed (an Airflow dependency), else json.

Payloads are encoded canonically (sorted keys, no spaces, text not escaped) so that their
hash changes only when their content does; request bodies and answers are plain JSON.
Where msgspec refuses a text, the standard parser decides, and names the error.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import msgspec
except ImportError:  # pragma: no cover - depends on the install
    msgspec = None

__all__ = ["Raw", "canonical", "dumps", "loads"]

Raw = msgspec.Raw if msgspec is not None else None


def _canonical_stdlib(obj: Any) -> bytes:  # pragma: no cover - depends on the install
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _dumps_stdlib(obj: Any) -> bytes:  # pragma: no cover - depends on the install
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


canonical = msgspec.json.Encoder(order="sorted").encode if msgspec is not None else _canonical_stdlib
dumps = msgspec.json.Encoder().encode if msgspec is not None else _dumps_stdlib


def loads(text: str | bytes) -> Any:
    """Parse a JSON text; ``ValueError`` (as json's) where it is not one."""
    if msgspec is not None:
        try:
            return msgspec.json.decode(text)
        except (msgspec.DecodeError, OverflowError):
            pass
    return json.loads(text)
