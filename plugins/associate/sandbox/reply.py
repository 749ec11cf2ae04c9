"""What a sandbox handler returns: status, JSON body and extra headers of one HTTP response.

Kept apart from the server and the handlers so that both can build replies without
importing each other. The error forms (``--error-form``) are applied here: Capillary's
reference documents codes, not HTTP statuses, so the same error may reach a client as a
400, a 404, a 200 carrying ``errors`` or a 500 (docs/sandbox.md, "Error forms").
"""

from __future__ import annotations

from typing import Any

ALL_FAILED_CODE = 500
ALL_FAILED_MESSAGE = "All requests failed due to errors"


class Reply:
    """Status, JSON body and extra headers of a response."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def errors_body(code: int, message: str) -> dict:
    """The contract's whole-request error body."""
    return {"errors": [{"status": False, "code": code, "message": message}]}


def error_reply(status: int, code: int, message: str, form: str = "documented") -> Reply:
    """A whole-request error in the given form; ``status`` is the documented form's status."""
    if form == "documented":
        return Reply(status, errors_body(code, message))
    if form == "200":
        return Reply(200, {"entity": None, **errors_body(code, message), "warnings": []})
    # "500-bare" differs from "500" only for a bulk call whose every element failed.
    return Reply(500 if form == "500-bare" else int(form), errors_body(code, message))


def all_failed_reply(results: list[dict], form: str = "documented") -> Reply:
    """The answer to a bulk call whose every element failed."""
    if form == "500":
        return Reply(500, results)
    if form == "500-bare":
        return Reply(500, errors_body(ALL_FAILED_CODE, ALL_FAILED_MESSAGE))
    return Reply(200, results)
