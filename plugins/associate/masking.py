"""Masking of personal data (mobiles, emails) for logs, reports and the quarantine table."""

from __future__ import annotations

import logging
import re

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
# Runs of 8-15 digits, optionally with a leading + and single separators: phone-like.
_PHONE_RE = re.compile(r"(?<![\w*])\+?\d(?:[ \-]?\d){7,14}(?!\w)")
# Dates and times are digit runs too, and must stay readable in logs.
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def mask_mobile(value: object) -> str:
    """``919876544424`` -> ``91******4424``: country prefix and last four digits stay."""
    if value is None:
        return ""
    digits = re.sub(r"\D", "", str(value))
    if len(digits) <= 6:
        return "*" * len(digits)
    return digits[:2] + "*" * (len(digits) - 6) + digits[-4:]


def mask_email(value: object) -> str:
    """``john.doe@example.com`` -> ``j*******@example.com``."""
    if value is None:
        return ""
    text = str(value)
    local, sep, domain = text.rpartition("@")
    if not sep:
        return text[:1] + "*" * max(len(text) - 1, 0)
    return local[:1] + "*" * max(len(local) - 1, 1) + "@" + domain


def mask_text(text: object) -> str:
    """Mask every email and phone-like number inside free text (messages, log lines)."""
    if text is None:
        return ""
    masked = _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), str(text))
    return _PHONE_RE.sub(
        lambda m: m.group(0) if _DATE_RE.match(m.group(0)) else mask_mobile(m.group(0)), masked
    )


def mask_value(column: str | None, value: object) -> str:
    """Mask a cell by its column: mobiles and emails masked, other text scrubbed."""
    if value is None:
        return ""
    if column and "mobile" in column:
        return mask_mobile(value)
    if column and "email" in column:
        return mask_email(value)
    return mask_text(value)


class PiiMaskingFilter(logging.Filter):
    """A logging filter that masks mobiles and emails in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = mask_text(record.msg)
        return True
