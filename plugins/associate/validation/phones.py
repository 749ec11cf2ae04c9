"""Mobile normalising (default region) and validity per libphonenumber, vectorised: exact fast path, library fallback."""

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


def normalize_mobile(values: pd.Series, region: str | None = None) -> pd.Series:
    """``identifiers.normalize_mobile`` of every value (None where it gives None), once per distinct value."""
    return mobile_validity(values, region)["norm"]


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


def _judge(digits: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validity and region of unique digit strings by the fast path; also which ones only the library can judge."""
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
    return valid, region, needs_library


def _validate_unique(digits: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Validity and region of unique digit strings."""
    valid, region, needs_library = _judge(digits)
    digits = digits.reset_index(drop=True)
    for pos in np.flatnonzero(needs_library):
        valid[pos], region[pos] = _library_check(digits[pos])
    return valid, region


def _region_of(digits: str) -> str:
    number = identifiers.parse_mobile(digits)
    region = phonenumbers.region_code_for_number(number) if number is not None else None
    return region if region and region != "ZZ" else UNKNOWN_REGION


def _ambiguity(readings: tuple[str, str]) -> str:
    """``EG (+20) and US (+1)``: the regions and calling codes a bare number could be, nothing personal."""
    return " and ".join(f"{_region_of(d)} (+{identifiers.parse_mobile(d).country_code})" for d in readings)


def _normalize_unique(raw: list, region: str | None) -> tuple[list, np.ndarray, np.ndarray, list]:
    """E.164 digits, validity, region and ambiguity of distinct mobile values, as ``identifiers.read_mobile`` reads them.

    Values written as E.164 digits that the fast path judges are settled without a parse
    (a parse costs ~40 µs: minutes for a million numbers): all of them without a region;
    with one, those written with '+' and the valid ones that start with the region's own
    calling code. The rest (separators, national numbers, numbers only the library can
    judge) are read by the library itself.
    """
    strict = [identifiers.e164_digits(v) for v in raw]
    norm = list(strict)
    ambiguous: list = [None] * len(raw)
    valid = np.zeros(len(raw), dtype=bool)
    number_region = np.full(len(raw), UNKNOWN_REGION, dtype=object)
    settled = np.zeros(len(raw), dtype=bool)
    written = np.flatnonzero(np.array([d is not None for d in strict], dtype=bool))
    if written.size:
        digits = pd.Series([strict[i] for i in written], dtype=object).astype("str")  # Arrow: vectorised .str
        fast_valid, fast_region, slow = _judge(digits)
        if region is None:
            no_other_reading = np.ones(written.size, dtype=bool)
        else:
            own_code = str(phonenumbers.country_code_for_region(region))
            plus = np.array([str(raw[i]).strip().startswith("+") for i in written], dtype=bool)
            no_other_reading = plus | (fast_valid & np.array(digits.str.startswith(own_code), dtype=bool))
        settled[written] = ~slow & no_other_reading
        valid[written], number_region[written] = fast_valid, fast_region
    rest = np.flatnonzero(~settled)
    for i in rest:
        norm[i], readings = identifiers.read_mobile(raw[i], region)
        if readings is not None:
            ambiguous[i] = _ambiguity(readings)
    read = [i for i in rest if norm[i] is not None]
    valid[rest], number_region[rest] = False, UNKNOWN_REGION
    if read:
        valid[read], number_region[read] = _validate_unique(
            pd.Series([norm[i] for i in read], dtype=object).astype("str"))
    return norm, valid, number_region, ambiguous


def mobile_validity(values: pd.Series, region: str | None = None) -> pd.DataFrame:
    """Per row of a mobile column: ``norm`` E.164 digits, ``valid``, its ``region``, and ``ambiguous``.

    ``region`` is the default region numbers without a country code are read with (None:
    they need one). ``valid`` is NA where there is no mobile, or where it is ambiguous:
    ``ambiguous`` then names the two regions it is a valid number of (else None).
    """
    present = np.array(values.astype("string").str.strip().fillna("") != "", dtype=bool)
    codes, uniques = pd.factorize(values)  # each distinct value is read and judged once
    # tolist(): reading an Arrow-backed array item by item costs more than the normalising.
    norm_u, valid_u, region_u, ambiguous_u = _normalize_unique(uniques.tolist(), region)
    has_code = codes >= 0
    norm = np.array(norm_u + [None], dtype=object)[codes]  # code -1 (missing) picks the None
    ambiguous = np.array(ambiguous_u + [None], dtype=object)[codes]
    valid = np.zeros(len(values), dtype=bool)
    valid[has_code] = valid_u[codes[has_code]]
    number_region = np.full(len(values), UNKNOWN_REGION, dtype=object)
    number_region[has_code] = region_u[codes[has_code]]
    number_region[~present] = None
    judged = present & np.array([a is None for a in ambiguous], dtype=bool)
    return pd.DataFrame({"norm": pd.Series(norm, index=values.index, dtype=object),
                         "valid": pd.array(valid, dtype="boolean"), "region": number_region,
                         "ambiguous": pd.Series(ambiguous, index=values.index, dtype=object)},
                        index=values.index).assign(valid=lambda f: f["valid"].mask(~judged))


def read_with(region: str | None) -> str:
    """How numbers were read, for quarantine reasons: ``read with default region IN``."""
    return f"read with default region {region}" if region else "read as international: no default phone region is set"


def library_is_valid(digits: str) -> bool:
    """What libphonenumber itself returns (used by the tests to prove the fast path exact)."""
    return _library_check(digits)[0]


__all__ = ["mobile_validity", "normalize_mobile", "read_with", "library_is_valid", "UNKNOWN_REGION"]
