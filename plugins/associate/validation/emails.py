"""Email syntax per email-validator (no DNS), vectorised: a strict regex fast path, the library for the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
from email_validator import EmailNotValidError, validate_email

# A strict subset of what email-validator accepts (ASCII dot-atom local part, LDH labels,
# alphabetic TLD, no "--" so no IDNA questions); tests prove every match passes the library.
# email-validator refuses the special-use TLDs (arpa, invalid, local, localhost, onion, test)
# even without a DNS check; lengths: address <= 254, local part <= 64.
_FAST_RE = (
    r"(?=.{1,254}$)(?=[^@]{1,64}@)(?!.*--)"
    r"[A-Za-z0-9_+\-]+(?:\.[A-Za-z0-9_+\-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?<!(?i:\.arpa))(?<!(?i:\.invalid))(?<!(?i:\.local))(?<!(?i:\.localhost))"
    r"(?<!(?i:\.onion))(?<!(?i:\.test))"
)


def _library_valid(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def library_is_valid(address: str) -> bool:
    """Reference answer of email-validator itself."""
    return _library_valid(address)


def _valid_unique(addresses: pd.Series) -> np.ndarray:
    text = addresses.astype(str)
    fast = np.array(text.str.fullmatch(_FAST_RE).fillna(False), dtype=bool)
    valid = fast.copy()
    for pos in np.flatnonzero(~fast):
        valid[pos] = _library_valid(text.iat[pos])
    return valid


def email_validity(values: pd.Series) -> pd.DataFrame:
    """Per row: ``norm`` (lower-cased, for uniqueness) and ``valid`` (boolean, NA where no email)."""
    text = values.astype("string").str.strip()
    present = np.array(text.fillna("") != "", dtype=bool)
    text = text.where(present)
    norm = text.str.lower().astype(object).where(present, None)
    codes, uniques = pd.factorize(text)  # each distinct address is judged once
    valid_u = _valid_unique(pd.Series(uniques, dtype=object)) if len(uniques) else np.zeros(0, dtype=bool)
    valid = np.zeros(len(values), dtype=bool)
    valid[codes >= 0] = valid_u[codes[codes >= 0]]
    flags = pd.array(valid, dtype="boolean")
    flags[~present] = pd.NA
    return pd.DataFrame({"norm": norm, "valid": flags}, index=values.index)
