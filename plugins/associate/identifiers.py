"""Customer identifiers as Capillary keys them: the one mobile normaliser of the project.

Validation (what is accepted), the payload (what is sent) and the sandbox (what is
matched) all call ``normalize_mobile``, so a number validation lets through is sent, and
matched, under exactly the digits validation judged. This module depends only on the
standard library and ``phonenumbers``: the sandbox imports it without the client's stack.
"""

from __future__ import annotations

import phonenumbers


def normalize_mobile(value: object) -> str | None:
    """A mobile as E.164 digits without '+', or None if ``value`` is not written that way.

    Surrounding whitespace is ignored; ``"+919876544424"`` and ``" 919876544424 "`` both
    give ``"919876544424"``. Spaces or dashes inside, letters, full-width digits, a blank or
    a missing value give None. The number is read as international (the country calling
    code comes first); a region for national numbers would be a keyword argument here.
    """
    if value is None:
        return None
    text = str(value).strip()
    digits = text[1:] if text.startswith("+") else text
    # ASCII digits only: separators or other scripts' digits would be guesses about what
    # the writer meant. (isdigit() alone also takes e.g. superscripts.)
    return digits if digits.isascii() and digits.isdigit() else None


def parse_mobile(digits: str) -> phonenumbers.PhoneNumber | None:
    """The number libphonenumber reads from normalised digits, or None if it reads none."""
    try:
        return phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None


def is_valid_mobile(digits: str) -> bool:
    """Whether libphonenumber calls normalised digits a valid number (the reference validation follows)."""
    number = parse_mobile(digits)
    return number is not None and phonenumbers.is_valid_number(number)
