"""Customer identifiers as Capillary keys them: the one mobile normaliser of the project.

Validation reads a warehouse's mobile with ``normalize_mobile`` (any usual format, national
numbers with a default region) and hands over E.164 digits; the payload sends and the
sandbox matches those digits, read back with ``e164_digits``. So a number validation lets
through is sent, and matched, under exactly the digits validation judged. This module
depends only on the standard library and ``phonenumbers``: the sandbox imports it without
the client's stack.
"""

from __future__ import annotations

from typing import NamedTuple

import phonenumbers


def e164_digits(value: object) -> str | None:
    """A mobile written as E.164 digits (optional '+'), as those digits; None if written otherwise.

    Surrounding whitespace is ignored; ``"+919876544424"`` and ``" 919876544424 "`` both
    give ``"919876544424"``. Separators, letters, other scripts' digits, a blank or a
    missing value give None. This is the form validation hands over, the payload sends and
    the sandbox stores.
    """
    if value is None:
        return None
    text = str(value).strip()
    digits = text[1:] if text.startswith("+") else text
    # ASCII digits only (isdigit() alone also takes e.g. superscripts).
    return digits if digits.isascii() and digits.isdigit() else None


def default_region(code: object) -> str | None:
    """A default phone region as libphonenumber knows it (``"in"`` -> ``"IN"``); None when not set.

    Raises ValueError for anything but an ISO 3166 alpha-2 code libphonenumber has metadata for.
    """
    if code is None or not str(code).strip():
        return None
    region = str(code).strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{code!r} is not a phone region: give an ISO 3166 alpha-2 country code "
                         f"libphonenumber knows, e.g. IN, GB or US")
    return region


class MobileReading(NamedTuple):
    """How a mobile value reads: its E.164 digits, or the two valid numbers it could be."""

    digits: str | None  # E.164 digits without '+' (maybe of an invalid number); None: no number, or ambiguous
    ambiguous: tuple[str, str] | None = None  # (as international, as national): both valid, neither taken


def read_mobile(value: object, region: str | None = None) -> MobileReading:
    """Read a mobile written in any usual format, with ``region`` for numbers without a country code.

    - With '+', or without a region, the number is international (the contract's form,
      '+' optional): ``"+91 98765-43210"``, ``"919876543210"``, ``"91 98765 43210"``.
    - With a region and no '+', libphonenumber reads it as that region would dial it:
      ``"98765 43210"``, ``"(0) 98765 43210"``, ``"0091 98765 43210"`` or ``"919876543210"``
      with ``"IN"``; if that is not a valid number, as international (a foreign number
      written as E.164 digits without '+').
    - Bare digits valid both ways as different numbers (``"6591234567"``: Singapore, or
      India's 65912 34567) are ambiguous: no guess is made. Bare digits that start with
      the region's own country code and are valid as international are not ambiguous.
    - Letters (vanity numbers, ``ext.``, ``tel:``) and extensions are no number.

    An invalid number still has digits (of the regional reading when there is one), for
    validation to refuse it naming its region.
    """
    if value is None:
        return MobileReading(None)
    text = str(value).strip()
    if not text or any(ch.isalpha() for ch in text):
        return MobileReading(None)
    plus = text.startswith("+")
    international = _parse(text if plus else "+" + text, None)
    if region is None or plus:
        return MobileReading(_digits(international) if international else e164_digits(text))
    intl_valid = international is not None and phonenumbers.is_valid_number(international)
    bare = e164_digits(text) is not None
    if bare and intl_valid and text.startswith(str(phonenumbers.country_code_for_region(region))):
        return MobileReading(_digits(international))
    regional = _parse(text, region)
    if regional is not None and phonenumbers.is_valid_number(regional):
        if bare and intl_valid and _digits(international) != _digits(regional):
            return MobileReading(None, (_digits(international), _digits(regional)))
        return MobileReading(_digits(regional))
    if intl_valid:
        return MobileReading(_digits(international))
    reading = regional or international
    return MobileReading(_digits(reading) if reading else e164_digits(text))


def normalize_mobile(value: object, region: str | None = None) -> str | None:
    """A mobile in any usual format as canonical E.164 digits without '+' (see ``read_mobile``).

    None when it reads as no number or as two valid numbers. ``"+91 98765-43210"``, and
    ``"98765 43210"`` with region ``"IN"``, give ``"919876543210"``.
    """
    return read_mobile(value, region).digits


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _digits(number: phonenumbers.PhoneNumber) -> str | None:
    """E.164 digits of a parsed number; None for one with an extension (no mobile has one)."""
    if number.extension:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def parse_mobile(digits: str) -> phonenumbers.PhoneNumber | None:
    """The number libphonenumber reads from E.164 digits, or None if it reads none."""
    try:
        return phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None


def is_valid_mobile(digits: str) -> bool:
    """Whether libphonenumber calls E.164 digits a valid number (the reference validation follows)."""
    number = parse_mobile(digits)
    return number is not None and phonenumbers.is_valid_number(number)
