"""Vectorised pandas derivations the GX suites assert on (``<column>__<what>``: True pass, False fail, NA n/a)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from associate import tables
from associate.validation import emails, graph, phones

CUSTOMER_TIMESTAMPS = ("tier_expiry_date", "points_expiry_date", "registered_at", "updated_at")
CUSTOMER_INTS = ("program_id", "tier_number", "loyalty_points")
CUSTOMER_JSON = ("extended_fields", "custom_fields")
CUSTOMER_TEXT = tuple(
    c for c in tables.CUSTOMER_COLUMNS
    if c not in CUSTOMER_TIMESTAMPS + CUSTOMER_INTS + CUSTOMER_JSON + ("last_viewed_date",)
)
COMPANY_TEXT = tuple(c for c in tables.COMPANY_COLUMNS if c not in ("updated_at", "extended_fields"))
CARD_COLUMNS = ("card_number", "card_series_code", "card_status_label")
# Capillary stores a NUL byte in a name as-is and refuses identifiers with any control
# character (1003); tabs and line breaks in names are kept and harmless.
PRINTABLE_CUSTOMER = ("first_name", "last_name", "external_id", "card_number")
IDENTIFIER_TEXT = ("external_id", "card_number")
_CONTROL_CHARS = r"[\x00-\x1f\x7f]"
_CONTROL_CHARS_BUT_WHITESPACE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
UNIQUE_IDENTIFIERS = {"mobile": "mobile__norm", "email": "email__norm",
                      "external_id": "external_id", "card_number": "card_number"}


class SharedArray(np.ndarray):
    """A read-only array that a frame's ``attrs`` hand on without a copy."""

    # pandas deep-copies ``attrs`` on every frame operation (GX's metrics run hundreds):
    # copying the 1M-row relation arrays each time cost seconds of the gate.
    def __deepcopy__(self, memo: dict) -> SharedArray:
        return self


def _flag(passed, applicable) -> pd.arrays.BooleanArray:
    """A nullable boolean: ``passed`` where ``applicable``, NA elsewhere (GX skips NA)."""
    out = pd.array(np.array(passed, dtype=bool), dtype="boolean")
    out[~np.array(applicable, dtype=bool)] = pd.NA
    return out


def _text(values: pd.Series) -> pd.Series:
    """Text column as pandas str (NA where missing); blank strings count as missing."""
    text = values if values.dtype == "str" else values.astype(object).astype("str")
    blank = text.str.strip().str.len() == 0
    # No blanks (the usual case): share the input's memory instead of copying the column.
    return text.where(~blank) if blank.any() else text


def printable_flags(text: pd.Series, *, identifier: bool = False) -> pd.arrays.BooleanArray:
    """False where the text holds a control character (tab/line breaks allowed unless an identifier)."""
    pattern = _CONTROL_CHARS if identifier else _CONTROL_CHARS_BUT_WHITESPACE
    has_control = np.array(text.str.contains(pattern, regex=True).fillna(False), dtype=bool)
    return _flag(~has_control, np.array(text.notna(), dtype=bool))


def _present(values: pd.Series) -> np.ndarray:
    """Not missing and not blank text."""
    if values.dtype == "str":
        # Staged text comes back as Arrow strings: test it column-wise, not value by value.
        return np.asarray(values.str.strip().str.len() > 0, dtype=bool)
    if values.dtype != object:
        return np.asarray(values.notna(), dtype=bool)
    blank = values.map(lambda v: isinstance(v, str) and not v.strip(), na_action="ignore")
    return np.array(values.notna() & ~blank.fillna(False).astype(bool), dtype=bool)


def parse_timestamps(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse native/ISO values to UTC (naive = UTC); also which present values did not parse."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC")
        return parsed, np.zeros(len(values), dtype=bool)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        parsed = values.dt.tz_localize("UTC")
        return parsed, np.zeros(len(values), dtype=bool)
    present = _present(values)
    if values.dtype == "str":
        cleaned = values.str.strip().where(present)
    else:
        raw = values.astype(object)
        cleaned = raw.map(lambda v: v.strip() if isinstance(v, str) else v, na_action="ignore").where(present, None)
    parsed = pd.Series(pd.to_datetime(cleaned, format="ISO8601", utc=True, errors="coerce"), index=values.index)
    return parsed, present & np.array(parsed.isna(), dtype=bool)


def json_object_flags(values: pd.Series) -> pd.arrays.BooleanArray:
    """True where the value is a JSON object (dicts pass as is), NA where missing."""
    present = _present(values)

    def is_object(value: object) -> bool:
        if isinstance(value, dict):
            return True
        if not isinstance(value, str):
            return False
        try:
            return isinstance(json.loads(value), dict)
        except ValueError:
            return False

    passed = np.zeros(len(values), dtype=bool)
    candidates = values[present]
    if candidates.dtype == object and candidates.map(type).eq(dict).any():
        passed[present] = [is_object(v) for v in candidates]  # dicts cannot be factorized
    elif len(candidates):
        # Each distinct document is parsed once (most rows share a few shapes).
        codes, uniques = pd.factorize(candidates)
        passed[present] = np.array([is_object(v) for v in uniques], dtype=bool)[codes]
    return _flag(passed, present)


def integer_flags(values: pd.Series) -> tuple[pd.Series, pd.arrays.BooleanArray]:
    """Numeric value (Float64) and whether each present value is a whole number."""
    if pd.api.types.is_integer_dtype(values.dtype):
        # The extract stages whole-number columns as Int64: every present value passes.
        present = np.asarray(values.notna(), dtype=bool)
        return values.astype("Float64"), _flag(present, present)
    raw = values.astype(object)
    present = _present(raw)
    numeric = pd.to_numeric(raw.where(present, None), errors="coerce").astype("Float64")
    whole = np.array((numeric.notna() & (numeric.fillna(0) % 1 == 0)), dtype=bool)
    return numeric, _flag(whole, present)


def _others_sharing(keys: pd.Series, values: pd.Series, limit: int = 3) -> pd.Series:
    """For rows whose value is shared: the other keys holding it (up to ``limit``), else None."""
    dup = values.notna() & values.duplicated(keep=False)
    out = pd.Series(None, index=values.index, dtype=object)
    if not dup.any():
        return out
    groups = keys[dup].astype(str).groupby(values[dup]).agg(list)
    own = keys[dup].astype(str)
    for pos, value, key in zip(own.index, values[dup], own):
        others = [k for k in groups[value] if k != key] or [key]
        out[pos] = ", ".join(others[:limit]) + (f" and {len(others) - limit} more" if len(others) > limit else "")
    return out


class HierarchyIndex:
    """Lookups over the hierarchy definitions: roles, allowed parent->child roles, maxChild."""

    def __init__(self, hierarchies: Iterable) -> None:
        self.codes: set[str] = set()
        self.roles: set[str] = set()            # "hier\x1frole"
        self.allowed: set[str] = set()          # "hier\x1fparent_role\x1fchild_role"
        self.expected_child: dict[str, str] = {}  # "hier\x1fparent_role" -> childRoleCode
        self.max_child: dict[str, int] = {}     # "hier\x1frole" -> maxChild
        for h in hierarchies:
            self.codes.add(h.code)
            by_code = {r.code: r for r in h.roles}
            for role in h.roles:
                key = f"{h.code}\x1f{role.code}"
                self.roles.add(key)
                self.expected_child[key] = role.childRoleCode or "none"
                if role.maxChild is not None:
                    self.max_child[key] = role.maxChild
                child, seen = role.childRoleCode, set()
                while child and child not in seen:
                    self.allowed.add(f"{h.code}\x1f{role.code}\x1f{child}")
                    if not h.skipRoleAllowed:
                        break
                    seen.add(child)
                    child = by_code[child].childRoleCode if child in by_code else None


def _pair(*parts: pd.Series) -> pd.Series:
    out = parts[0].astype(str)
    for part in parts[1:]:
        out = out + "\x1f" + part.astype(str)
    return out.where(pd.concat(parts, axis=1).notna().all(axis=1), None)


def prepare_companies(companies: pd.DataFrame, hierarchies: HierarchyIndex) -> pd.DataFrame:
    """Company rows (RangeIndex) with parsed and derived columns for the company suite."""
    frame = companies.reindex(columns=list(tables.COMPANY_COLUMNS)).reset_index(drop=True)
    out = pd.DataFrame({c: _text(frame[c]) for c in COMPANY_TEXT})
    out["updated_at"] = frame["updated_at"]
    out["updated_at__ts"], bad = parse_timestamps(frame["updated_at"])
    out["updated_at__parseable"] = _flag(~bad, bad | out["updated_at__ts"].notna())
    out["company_name__printable"] = printable_flags(out["company_name"])
    hier = out["hierarchy_code"]
    out["hierarchy_code__known"] = _flag(hier.isin(hierarchies.codes), hier.notna())
    parent = out["parent_company_external_id"]
    keys = out["company_external_id"]
    out["parent_company_external_id__known"] = _flag(parent.isin(set(keys.dropna())), parent.notna())
    parent_pos = graph.parent_positions(keys, parent)
    cyclic = graph.on_cycle(parent_pos)
    out["parent_company_external_id__acyclic"] = _flag(~cyclic, parent_pos >= 0)
    out["extended_fields"] = frame["extended_fields"]
    out["extended_fields__object"] = json_object_flags(out["extended_fields"])
    out.attrs["parent_pos"] = parent_pos.view(SharedArray)
    out.attrs["cyclic"] = cyclic.view(SharedArray)
    return out


def prepare_customers(customers: pd.DataFrame, companies: pd.DataFrame,
                      hierarchies: HierarchyIndex, phone_region: str | None = None) -> pd.DataFrame:
    """Customer rows (RangeIndex) with parsed and derived columns for the customer suite.

    ``phone_region``: the default region national mobiles are read with (None: none).
    """
    frame = customers.reindex(columns=list(tables.CUSTOMER_COLUMNS)).reset_index(drop=True)
    out = pd.DataFrame({c: _text(frame[c]) for c in CUSTOMER_TEXT})
    keys = out["customer_key"]

    mobile = phones.mobile_validity(out["mobile"], phone_region)
    email = emails.email_validity(out["email"])
    out["mobile__valid"], out["email__valid"] = mobile["valid"].array, email["valid"].array
    # Derived text as pandas str (Arrow): a fraction of the memory of Python objects at 1M rows.
    out["mobile__region"] = mobile["region"].astype("str")
    out["mobile__norm"] = mobile["norm"].astype("str")
    ambiguous = mobile["ambiguous"]
    out["mobile__unambiguous"] = _flag(ambiguous.isna(), _present(out["mobile"]))
    out["mobile__ambiguous"] = ambiguous.astype("str")
    # For the reasons; one category, so a million rows cost a million one-byte codes.
    out["mobile__read_with"] = pd.Categorical.from_codes(np.zeros(len(out), dtype=np.int8),
                                                         [phones.read_with(phone_region)])
    out["email__norm"] = email["norm"].astype("str")
    has_primary = out["mobile"].notna() | out["email"].notna() | out["external_id"].notna()
    out["identifiers__primary"] = _flag(has_primary, np.ones(len(out), dtype=bool))
    for column, unique_column in UNIQUE_IDENTIFIERS.items():
        out[f"{column}__shared_with"] = _others_sharing(keys, out[unique_column]).astype("str")
    for column in PRINTABLE_CUSTOMER:
        out[f"{column}__printable"] = printable_flags(out[column], identifier=column in IDENTIFIER_TEXT)
    card_count = out[list(CARD_COLUMNS)].notna().sum(axis=1)
    out["card__complete"] = _flag(card_count == len(CARD_COLUMNS), card_count > 0)
    partial = (card_count > 0) & (card_count < len(CARD_COLUMNS))
    missing = out.loc[partial, list(CARD_COLUMNS)].isna()
    out["card__missing"] = pd.Series(
        [", ".join(c for c, gone in row.items() if gone) for _, row in missing.iterrows()],
        index=missing.index, dtype=object,
    ).reindex(out.index).astype("str")

    for column in CUSTOMER_INTS:
        out[column] = frame[column]
        out[f"{column}__num"], out[f"{column}__int"] = integer_flags(frame[column])
    enrolled = out[["tier_number", "loyalty_points"]].notna().any(axis=1) | frame[
        ["tier_expiry_date", "points_expiry_date"]].notna().any(axis=1)
    out["program_id__present"] = _flag(out["program_id"].notna(), enrolled)

    for column in CUSTOMER_TIMESTAMPS + ("last_viewed_date",):
        out[column] = frame[column]
        out[f"{column}__ts"], bad = parse_timestamps(frame[column])
        out[f"{column}__parseable"] = _flag(~bad, bad | out[f"{column}__ts"].notna())
    for column in CUSTOMER_JSON:
        out[column] = frame[column]
        out[f"{column}__object"] = json_object_flags(out[column])

    counted = customers[tables.CUSTOMER_CHILD_COUNT] if tables.CUSTOMER_CHILD_COUNT in customers.columns else None
    _derive_relations(out, companies, hierarchies,
                      None if counted is None else pd.to_numeric(counted, errors="coerce").reset_index(drop=True))
    return out


def _derive_relations(out: pd.DataFrame, companies: pd.DataFrame, hierarchies: HierarchyIndex,
                      warehouse_child_count: pd.Series | None = None) -> None:
    company = out["company_external_id"]
    role = out["role_code"]
    parent = out["parent_customer_key"]
    company_keys = companies["company_external_id"]
    hier_of_company = pd.Series(companies["hierarchy_code"].to_numpy(), index=company_keys.to_numpy())
    hier_of_company = hier_of_company[hier_of_company.index.notna() & ~hier_of_company.index.duplicated()]

    known_company = company.isin(set(company_keys.dropna()))
    out["company_external_id__known"] = _flag(known_company, company.notna())
    out["company_external_id__present"] = _flag(company.notna(), role.notna() | parent.notna())
    out["role_code__present"] = _flag(role.notna(), company.notna())
    hier = company.map(hier_of_company).where(known_company, None)
    hier = hier.where(hier.isin(hierarchies.codes), None)
    out["company__hierarchy_code"] = hier.astype("str")
    role_pair = _pair(hier, role)
    out["role_code__in_hierarchy"] = _flag(role_pair.isin(hierarchies.roles), role_pair.notna())

    parent_pos = graph.parent_positions(out["customer_key"], parent)
    has_parent = parent_pos >= 0
    out["parent_customer_key__known"] = _flag(has_parent, parent.notna())
    safe = np.where(has_parent, parent_pos, 0)

    def of_parent(column: str) -> pd.Series:
        values = out[column].iloc[safe]
        values.index = out.index
        return values.where(has_parent)

    parent_company = of_parent("company_external_id")
    same = (parent_company.fillna("\x00") == company.fillna("\x00"))
    out["parent__company_external_id"] = parent_company.astype("str")
    out["parent_customer_key__same_company"] = _flag(same, has_parent)

    cyclic = graph.on_cycle(parent_pos)
    out["parent_customer_key__acyclic"] = _flag(~cyclic, has_parent)

    parent_role = of_parent("role_code")
    parent_role_pair = _pair(hier, parent_role)
    out["parent__role_code"] = parent_role.astype("str")
    out["parent__expected_child_role"] = parent_role_pair.map(hierarchies.expected_child).astype("str")
    triple = _pair(hier, parent_role, role)
    checkable = (triple.notna() & same & role_pair.isin(hierarchies.roles)
                 & parent_role_pair.isin(hierarchies.roles))
    out["role_code__matches_parent"] = _flag(triple.isin(hierarchies.allowed), checkable)

    child_count = np.bincount(parent_pos[has_parent], minlength=len(out))
    if warehouse_child_count is not None:
        # A partial (incremental) extract holds only some of a parent's children; the
        # warehouse's own count covers the rest.
        child_count = np.maximum(child_count, warehouse_child_count.fillna(0).to_numpy(dtype=np.int64))
    # The parent's own hierarchy sets its limit, even when a child sits in another company.
    limit = pd.to_numeric(
        _pair(of_parent("company__hierarchy_code"), parent_role).astype(object).map(hierarchies.max_child),
        errors="coerce",
    ).astype("float64")
    out["parent__child_count"] = pd.Series(np.where(has_parent, child_count[safe], 0), index=out.index)
    out["parent__max_child"] = limit
    over = limit.notna() & (out["parent__child_count"] > limit.fillna(np.inf))
    out["parent_customer_key__within_max_child"] = _flag(~over, has_parent & limit.notna())
    out.attrs["parent_pos"] = parent_pos.view(SharedArray)
    out.attrs["cyclic"] = cyclic.view(SharedArray)
