"""What a sandbox handler returns: status, JSON body and extra headers of one HTTP response.

Kept apart from the server and the handlers so that both can build replies without
importing each other.
"""

from __future__ import annotations

from typing import Any


class Reply:
    """Status, JSON body and extra headers of a response."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def errors_body(code: int, message: str) -> dict:
    """The contract's whole-request error body."""
    return {"errors": [{"status": False, "code": code, "message": message}]}
