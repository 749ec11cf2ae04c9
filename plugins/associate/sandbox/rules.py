"""Identifier rules of the contract: normalisation, validity, and the codes for each failure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from associate.identifiers import e164_digits, is_valid_mobile

from .models import Codes, Identifier, Profile

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_EXTERNAL_ID = 150
MAX_EXTENDED_FIELD = 255
EARLIEST_REGISTRATION = datetime(1990, 1, 1, tzinfo=timezone.utc)
# A client clock a little ahead of ours is not a registration "in the future".
CLOCK_SKEW = timedelta(minutes=5)
MATCH_PRIORITY = ("mobile", "email", "externalId", "cardnumber")
CONFLICT_CODES = {"mobile": Codes.MOBILE_USED, "email": Codes.EMAIL_USED, "externalId": Codes.EXTERNAL_ID_USED}


class ElementError(Exception):
    """A contract error that fails one element (or one child) of a bulk call."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def as_message(self) -> dict:
        """The wire form ``{status, code, message}``."""
        return {"status": False, "code": self.code, "message": self.message}


class ConflictError(ElementError):
    """An element's identifiers belong to more than one stored customer.

    ``key`` names the element's set of identifiers (``refusal_key``) and ``id_type`` the
    identifier reported, so that the same set can be refused again for the same one.
    """

    def __init__(self, id_type: str, key: str):
        super().__init__(CONFLICT_CODES.get(id_type, Codes.VALUE_USED_BY_OTHER_USER),
                         f"{id_type} already used by another customer")
        self.id_type = id_type
        self.key = key


def refusal_key(identifiers: list[tuple[str, str, Any]]) -> str:
    """A stable name for a set of normalised identifiers, whatever their order in the request."""
    return json.dumps(sorted([t, v] for t, v, _ in identifiers), separators=(",", ":"), ensure_ascii=False)


def warning(code: int, message: str) -> dict:
    """A warning in wire form."""
    return {"status": False, "code": code, "message": message}


def normalize(id_type: str, value: str) -> str | None:
    """The stored form of an identifier: mobiles as the E.164 digits the client sends (None if
    written otherwise: the API has no default region), emails lower-case, others trimmed."""
    if id_type == "mobile":
        return e164_digits(value)
    value = value.strip()
    if id_type == "email":
        return value.lower()
    return value


def is_valid(id_type: str, value: str | None) -> bool:
    """Whether a normalised identifier value is acceptable for its type."""
    if not value or _CONTROL.search(value):
        return False
    if id_type == "mobile":
        # 8-15 digits stands in for the real service's check, so that tests may use made-up
        # numbers; a number libphonenumber calls valid is always taken, so every mobile that
        # validation lets through is matched here (+683 numbers have 7 digits, +49 up to 17).
        return 8 <= len(value) <= 15 or is_valid_mobile(value)
    if id_type == "email":
        return len(value) <= 254 and bool(_EMAIL.match(value))
    if id_type == "externalId":
        return len(value) <= MAX_EXTERNAL_ID
    return len(value) <= 250


@dataclass
class ResolvedIdentifiers:
    """The valid identifiers of a customer, ready to match and store, and the warnings met."""

    identifiers: list[tuple[str, str, dict | None]] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)


CARD_FIELDS = ("seriesId", "seriesCode", "statusLabel", "cardExternalId", "extendedFields", "customFields")


def _card_extra(identifier: Identifier) -> dict | None:
    extra = {k: getattr(identifier, k) for k in CARD_FIELDS if getattr(identifier, k) is not None}
    return extra or None


def check_card(identifier: Identifier) -> None:
    """A card needs its series (seriesId or seriesCode) and a statusLabel: the reference marks them required."""
    if identifier.type != "cardnumber":
        return
    if (identifier.seriesId is None and not identifier.seriesCode) or not identifier.statusLabel:
        raise ElementError(Codes.INVALID_INPUT, "Invalid input: a cardnumber identifier needs seriesId or "
                                                "seriesCode, and statusLabel")


def resolve_identifiers(profiles: list[Profile], loyalty_type: str) -> ResolvedIdentifiers:
    """Check every identifier of the profiles; raise the element error the contract gives."""
    result = ResolvedIdentifiers()
    seen: set[tuple[str, str]] = set()
    invalid: dict[str, int] = {}
    for profile in profiles:
        for ident in profile.identifiers:
            check_card(ident)
            value = normalize(ident.type, ident.value)
            if not is_valid(ident.type, value):
                invalid.setdefault(ident.type, 0)
                invalid[ident.type] += 1
                continue
            if (ident.type, value) not in seen:
                seen.add((ident.type, value))
                result.identifiers.append((ident.type, value, _card_extra(ident)))
        for channel in profile.commChannels:
            if channel.type == "mobile" and not is_valid("mobile", normalize("mobile", channel.value)):
                result.warnings.append(warning(Codes.INVALID_MOBILE_CHANNEL_WARNING, "Invalid mobile in comm channel"))
    primaries = [t for t, _, _ in result.identifiers if t in ("mobile", "email", "externalId")]
    if not result.identifiers and loyalty_type == "non_loyalty":
        raise ElementError(Codes.NO_IDENTIFIER_NON_LOYALTY, "No valid identifier for a non-loyalty customer")
    if "email" in invalid:
        raise ElementError(Codes.INVALID_EMAIL, "Invalid email")
    if "externalId" in invalid:
        raise ElementError(Codes.INVALID_EXTERNAL_ID, "Invalid external id")
    if "mobile" in invalid:
        if not primaries and loyalty_type == "loyalty":
            raise ElementError(Codes.INVALID_MOBILE, "Invalid mobile")
        result.warnings.append(warning(Codes.INVALID_MOBILE_WARNING, "Invalid mobile, ignored"))
    if not primaries and loyalty_type == "loyalty":
        raise ElementError(Codes.NO_PRIMARY_IDENTIFIER, "No valid primary identifier (mobile, email or externalId)")
    return result


def check_registration_dates(profiles: list[Profile], now: datetime | None = None) -> None:
    """createDate must lie between 1990-01-01 and now."""
    now = now or datetime.now(timezone.utc)
    for profile in profiles:
        if profile.createDate is None:
            continue
        try:
            out_of_range = profile.createDate < EARLIEST_REGISTRATION or profile.createDate > now + CLOCK_SKEW
        except OverflowError:  # years near 1 or 9999 with an offset cannot even be compared
            out_of_range = True
        if out_of_range:
            raise ElementError(Codes.REGISTRATION_DATE_OUT_OF_RANGE,
                               "Registration date (createDate) must be between 1990-01-01 and now")


def match_priority(id_type: str) -> int:
    """Lower wins when the identifiers of a request point at stored customers."""
    return MATCH_PRIORITY.index(id_type) if id_type in MATCH_PRIORITY else len(MATCH_PRIORITY)


def accepted_extended_fields(fields: dict, warnings: list[dict]) -> dict:
    """The extended fields that can be stored: scalars, text up to 255 characters; a warning per other."""
    accepted = {}
    for name, value in fields.items():
        scalar = value is None or isinstance(value, (bool, int, float, str))
        if not scalar or (isinstance(value, str) and len(value) > MAX_EXTENDED_FIELD):
            warnings.append(warning(Codes.EXTENDED_FIELDS_FAILED,
                                    f"Failed to update extended field {name!r}: not a scalar or longer than "
                                    f"{MAX_EXTENDED_FIELD} characters"))
            continue
        accepted[name] = value
    return accepted
