"""Mobile validity per libphonenumber, vectorised: exact fast path from its metadata, library fallback."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from associate import identifiers

UNKNOWN_REGION = "unknown"
_CC_STRINGS = {str(cc) for cc in COUNTRY_CODE_TO_REGION_CODE}
# The number types _number_type_helper tries after the general description (order irrelevant here).
_TYPE_DESCS = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
    "voicemail", "fixed_line", "mobile",
)


def normalize_mobile(values: pd.Series) -> pd.Series:
    """``identifiers.normalize_mobile`` of every value (None where it gives None), once per distinct value."""
    codes, uniques = pd.factorize(values)
    normalize = identifiers.normalize_mobile
    # tolist(): reading an Arrow-backed array item by item costs more than the normalising.
    digits = np.array([normalize(v) for v in uniques.tolist()] + [None], dtype=object)
    return pd.Series(digits[codes], index=values.index, dtype=object)  # code -1 (missing) picks the None


def country_code_of(digits: pd.Series) -> pd.Series:
    """The 1-3 digit country calling code each number starts with (None if none)."""
    out = pd.Series(None, index=digits.index, dtype=object)
    for width in (3, 2, 1):  # calling codes are prefix-free, so at most one width matches
        head = digits.str[:width]
        out = out.where(~head.isin(_CC_STRINGS), head)
    return out


def _descs(md) -> tuple:
    """(general desc, type descs) of a region, as (possible lengths, pattern) pairs."""
    types = []
    for name in _TYPE_DESCS:
        if name == "mobile" and md.same_mobile_and_fixed_line_pattern:
            continue  # the library never tests mobile separately then
        desc = getattr(md, name)
        if desc is not None and desc.national_number_pattern:
            types.append((frozenset(desc.possible_length), desc.national_number_pattern))
    return (frozenset(md.general_desc.possible_length), md.general_desc.national_number_pattern), types


@lru_cache(maxsize=None)
def _fast_rule(cc: str):
    """What the library would do for a calling code, as patterns; None when only the library can say."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(int(cc), ())
    if not regions or phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY in regions:
        return None
    metas = [PhoneMetadata.metadata_for_region(r, None) for r in regions]
    if any(md is None or md.general_desc is None or not md.general_desc.national_number_pattern
           for md in metas):
        return None
    # parse() strips national prefixes with the metadata of the calling code's main region.
    national_prefix = metas[0].national_prefix_for_parsing or None
    # region_code_for_number: the only region, else the first whose leading digits match,
    # or (no leading digits) the first where the number has a known type.
    rules = [
        (region, md.leading_digits if len(regions) > 1 else None, *_descs(md))
        for region, md in zip(regions, metas)
    ]
    return regions[0], national_prefix, rules, len(regions) == 1


def _desc_matches(nsn: pd.Series, lengths: pd.Series, desc) -> np.ndarray:
    possible, pattern = desc
    ok = np.array(lengths.isin(possible), dtype=bool) if possible else np.ones(len(nsn), dtype=bool)
    if ok.any():
        ok[ok] = np.array(nsn[ok].str.fullmatch(pattern).fillna(False), dtype=bool)
    return ok


def _type_known(nsn: pd.Series, lengths: pd.Series, general, types) -> np.ndarray:
    """_number_type_helper(...) != UNKNOWN, vectorised."""
    ok = _desc_matches(nsn, lengths, general)
    any_type = np.zeros(len(nsn), dtype=bool)
    for desc in types:
        rest = ok & ~any_type
        if rest.any():
            any_type[rest] = _desc_matches(nsn[rest], lengths[rest], desc)
    return ok & any_type


def _library_check(digits: str) -> tuple[bool, str]:
    number = identifiers.parse_mobile(digits)
    if number is None:
        return False, UNKNOWN_REGION
    region = phonenumbers.region_code_for_country_code(number.country_code)
    return phonenumbers.is_valid_number(number), (UNKNOWN_REGION if region == "ZZ" else region)


def _fast_group(nsn: pd.Series, rule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validity and region for numbers of one calling code; also which ones the library must decide."""
    main_region, national_prefix, rules, single = rule
    lengths = nsn.str.len()
    # The library may strip a national prefix or keep leading zeros: leave those to it.
    fast = np.array(lengths.between(2, 17) & (nsn.str[:1] != "0"), dtype=bool)
    if national_prefix:
        fast &= ~np.array(nsn.str.match(national_prefix).fillna(False), dtype=bool)
    valid = np.zeros(len(nsn), dtype=bool)
    region = np.full(len(nsn), main_region, dtype=object)
    open_rows = fast.copy()
    for region_code, leading, general, types in rules:
        if not open_rows.any():
            break
        rows = np.flatnonzero(open_rows)
        sub, sub_len = nsn.iloc[rows], lengths.iloc[rows]
        if single or leading is None:
            known = _type_known(sub, sub_len, general, types)
            hit = known if not single else np.ones(len(rows), dtype=bool)
        else:
            hit = np.array(sub.str.match(leading).fillna(False), dtype=bool)
            known = np.zeros(len(rows), dtype=bool)
            if hit.any():
                known[hit] = _type_known(sub[hit], sub_len[hit], general, types)
        valid[rows[hit]] = known[hit]
        region[rows[hit]] = region_code
        open_rows[rows[hit]] = False
    return valid, region, ~fast


def _validate_unique(digits: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Validity and region of unique digit strings."""
    valid = np.zeros(len(digits), dtype=bool)
    region = np.full(len(digits), UNKNOWN_REGION, dtype=object)
    digits = digits.reset_index(drop=True)
    cc = country_code_of(digits)
    needs_library = np.array(cc.notna(), dtype=bool)
    known_cc = cc.dropna()
    for code, idx in known_cc.groupby(known_cc).groups.items():
        rule = _fast_rule(code)
        if rule is None:
            continue
        pos = np.asarray(idx)
        group_valid, group_region, slow = _fast_group(digits[pos].str[len(code):], rule)
        valid[pos], region[pos] = group_valid, group_region
        needs_library[pos] = slow
    for pos in np.flatnonzero(needs_library):
        valid[pos], region[pos] = _library_check(digits[pos])
    return valid, region


def mobile_validity(values: pd.Series) -> pd.DataFrame:
    """Per row: ``norm`` digits, ``valid`` (boolean, NA where no mobile) and ``region`` of a mobile column."""
    present = np.array(values.astype("string").str.strip().fillna("") != "", dtype=bool)
    norm = normalize_mobile(values)
    codes, uniques = pd.factorize(norm)  # each distinct number is judged once
    valid_u, region_u = _validate_unique(pd.Series(uniques, dtype=object).astype(str))
    has_code = codes >= 0
    valid = np.zeros(len(values), dtype=bool)
    valid[has_code] = valid_u[codes[has_code]]
    region = np.full(len(values), UNKNOWN_REGION, dtype=object)
    region[has_code] = region_u[codes[has_code]]
    region[~present] = None
    return pd.DataFrame({"norm": norm, "valid": pd.array(valid, dtype="boolean"), "region": region},
                        index=values.index).assign(valid=lambda f: f["valid"].mask(~present))


def library_is_valid(digits: str) -> bool:
    """What libphonenumber itself returns (used by the tests to prove the fast path exact)."""
    return _library_check(digits)[0]


__all__ = ["mobile_validity", "normalize_mobile", "library_is_valid", "UNKNOWN_REGION"]
