"""Sample and benchmark warehouse: realistic fleet companies and customers, a few of them bad.

`generate_warehouse` builds the two input tables (``associate.tables`` columns) with numpy
(1M customers in seconds, no per-row Python loop), `load_sqlite` / `load_postgres` put
them into a database, and `touch` marks a fraction of customers as changed for the
incremental benchmarks.

CLI: ``python -m bench.generate --customers N [--seed S] [--bad-ratio R]
(--sqlite PATH | --postgres URL)``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from associate.tables import COMPANY_COLUMNS, CUSTOMER_COLUMNS  # noqa: E402

HIERARCHY_CODE = "code-association2"
# The seeded hierarchy: each role's child role (GFA -> SFA -> FA -> FC).
CHILD_ROLE = {"GFA": "SFA", "SFA": "FA", "FA": "FC", "FC": None}
ROLES = np.array(["GFA", "SFA", "FA", "FC"], dtype=object)
GFA, SFA, FA, FC = 0, 1, 2, 3

COMPANIES_TABLE = "fleet_companies"
CUSTOMERS_TABLE = "customers"

# Mobile templates: libphonenumber's example mobile of each region with the last
# `digits` digits replaced; every replacement of that many digits validates (checked
# against phonenumbers 9.0 with 3,000 random draws per region, and in the tests).
# Columns: region, calling code, national prefix kept, randomised digits, weight.
MOBILE_TEMPLATES = (
    ("IN", "91", "812", 7, 0.45),
    ("US", "1", "2015", 6, 0.12),
    ("GB", "44", "740", 7, 0.10),
    ("SG", "65", "81", 6, 0.06),
    ("AE", "971", "50", 7, 0.06),
    ("DE", "49", "1512", 7, 0.05),
    ("BR", "55", "1196", 7, 0.05),
    ("JP", "81", "901", 7, 0.04),
    ("AU", "61", "41", 7, 0.04),
    ("ZA", "27", "71", 7, 0.03),
)

# Names by script; which script a customer's name uses depends on the mobile's region.
NAMES = {
    "latin": (
        ["James", "Maria", "Arjun", "Priya", "Wei", "Fatima", "Olga", "Liam", "Sofia", "Noah",
         "Aisha", "Rahul", "Emma", "Lucas", "Mei", "Omar", "Hannah", "Diego", "Yuki", "Zara"],
        ["Smith", "Garcia", "Sharma", "Tan", "Khan", "Müller", "Silva", "Nguyen", "O'Brien",
         "Patel", "Kim", "Rossi", "Dubois", "Kowalski", "Nakamura", "Van der Berg", "Okafor"],
    ),
    "devanagari": (
        ["राहुल", "प्रिया", "अमित", "सुनीता", "विजय", "अनीता", "संजय", "कविता", "अर्जुन", "दीपिका"],
        ["शर्मा", "वर्मा", "गुप्ता", "सिंह", "पटेल", "जोशी", "मेहता", "यादव"],
    ),
    "cjk": (
        ["伟", "芳", "娜", "敏", "静", "太郎", "花子", "翔太", "明", "秀英"],
        ["王", "李", "张", "刘", "陈", "山田", "佐藤", "鈴木", "高橋", "林"],
    ),
    "arabic": (
        ["محمد", "فاطمة", "أحمد", "عائشة", "علي", "مريم", "يوسف", "خديجة"],
        ["الحسن", "العلي", "الخطيب", "النجار", "الفارسي", "المنصوري"],
    ),
    "cyrillic": (
        ["Иван", "Ольга", "Сергей", "Анна", "Дмитрий", "Наталья", "Алексей", "Елена"],
        ["Иванов", "Петрова", "Смирнов", "Кузнецова", "Попов", "Соколова"],
    ),
}
SCRIPTS = ("latin", "devanagari", "cjk", "arabic", "cyrillic")
# Probability of each script (order of SCRIPTS) for customers of a region.
SCRIPT_BY_REGION = {
    "IN": (0.55, 0.45, 0, 0, 0), "US": (0.9, 0, 0.05, 0, 0.05), "GB": (0.85, 0.05, 0, 0.05, 0.05),
    "SG": (0.5, 0, 0.5, 0, 0), "AE": (0.4, 0.1, 0, 0.5, 0), "DE": (0.8, 0, 0, 0.05, 0.15),
    "BR": (1.0, 0, 0, 0, 0), "JP": (0.1, 0, 0.9, 0, 0), "AU": (0.9, 0, 0.1, 0, 0),
    "ZA": (1.0, 0, 0, 0, 0),
}
EMAIL_DOMAINS = ("example.com", "example.org", "mail.example.in", "fleet.example.co.uk", "example.net")
COMPANY_BASES = (
    "Swift Cargo", "Blue Line Logistics", "Northstar Haulage", "Metro Freight", "Apex Transport",
    "Sahyadri Roadways", "Konkan Carriers", "Golden Wheels", "Harbour Fleet", "Desert Route",
    "शर्मा ट्रांसपोर्ट", "गणेश रोडलाइंस", "华东物流", "东方运输", "山田運輸", "شركة النقل السريع",
    "الخليج للشحن", "ТрансЛогистик", "Северный Путь", "Müller Spedition",
)
COMPANY_SUFFIXES = ("Pvt Ltd", "Ltd", "LLC", "GmbH", "Pte Ltd", "Co.", "Group", "")
CUSTOMER_EXTENDED = (
    {"gender": "Male", "city": "Pune"},
    {"gender": "Female", "city": "Mumbai", "dateOfBirth": "1988-04-12"},
    {"city": "Singapore", "preferredLanguage": "en"},
    {"gender": "Female", "city": "Dubai"},
    {"city": "Berlin", "preferredLanguage": "de"},
    {"gender": "Male", "dateOfBirth": "1979-11-30"},
)
CUSTOMER_CUSTOM = (
    {"vehicle_count": "3", "fuel_type": "diesel"},
    {"vehicle_count": "12", "fuel_type": "cng"},
    {"driver_licence_class": "HMV"},
    {"preferred_station": "Andheri East", "vehicle_count": "1"},
    {"fuel_type": "electric", "note": "Fahrer seit 2019"},
)
COMPANY_EXTENDED = (
    {"industry": "logistics", "fleet_size_band": "M"},
    {"industry": "construction", "fleet_size_band": "L"},
    {"industry": "retail", "fleet_size_band": "S"},
    {"gst_registered": "true", "industry": "logistics"},
)

# Ways a customer row is made bad (each one rule of the validation gate).
BAD_KINDS = (
    "invalid_mobile",          # wrong number of digits for the region
    "malformed_email",
    "duplicate_mobile",        # in pairs: both rows of a pair share one mobile
    "duplicate_email",         # in pairs
    "no_identifier",           # no mobile, email or external id
    "future_registered_at",
    "registered_before_1990",
    "expiry_before_registration",
    "future_last_viewed_date",
    "unknown_company",
    "parent_in_other_company",
    "wrong_parent_role",       # an FC directly under the GFA
    "unknown_parent",
    "unknown_role",
    "partial_card",
    "bad_loyalty_type",
    "bad_source",
    "extended_fields_array",
    "custom_fields_not_json",
    "tier_number_zero",
)
# Ways a company row is made bad; such companies get no customers, so nothing cascades.
BAD_COMPANY_KINDS = ("unknown_hierarchy", "unknown_parent_company", "missing_name")

DEFAULT_MAX_PER_REGION = 10**6


@dataclass
class Warehouse:
    """Generated input frames plus what the generator made bad on purpose."""

    companies: pd.DataFrame
    customers: pd.DataFrame
    bad_customers: pd.DataFrame  # customer_key, kind
    bad_companies: pd.DataFrame  # company_external_id, kind


def generate_warehouse(
    n_customers: int, *, seed: int = 7, bad_ratio: float = 0.03, now: datetime | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Companies and customers frames (``associate.tables`` columns), deterministic for seed and now."""
    warehouse = generate(n_customers, seed=seed, bad_ratio=bad_ratio, now=now)
    return warehouse.companies, warehouse.customers


def default_now() -> datetime:
    """Start of the current UTC day: realistic 'now' that stays the same for a whole day."""
    today = datetime.now(timezone.utc).date()
    return datetime(today.year, today.month, today.day, tzinfo=timezone.utc)


def generate(
    n_customers: int, *, seed: int = 7, bad_ratio: float = 0.03, now: datetime | None = None
) -> Warehouse:
    """The generated warehouse with the list of rows made bad and why.

    The rows depend on the seed alone: ``now`` (default: today) moves the dates, never which
    customers exist, which are bad or what their identifiers are.
    """
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    if not 0 <= bad_ratio < 0.5:
        raise ValueError("bad_ratio must be in [0, 0.5)")
    now = now or default_now()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rng = np.random.default_rng(seed)
    builder = _CustomerBuilder(n_customers, rng, now)
    customers = builder.build()
    companies = _build_companies(builder.n_companies, rng, now)
    bad_customers = _make_bad_customers(customers, builder, rng, bad_ratio, now)
    companies, bad_companies = _add_bad_companies(companies, rng, bad_ratio, now)
    customers = customers.iloc[builder.row_order].reset_index(drop=True)
    return Warehouse(companies, customers[list(CUSTOMER_COLUMNS)], bad_customers, bad_companies)


def _seconds(values: np.ndarray) -> pd.Series:
    """Epoch seconds (NaN allowed) -> tz-aware UTC datetimes."""
    return pd.Series(pd.to_datetime(values, unit="s", utc=True)).astype("datetime64[us, UTC]")


def _text(values: np.ndarray, mask: np.ndarray | None = None) -> pd.Series:
    """Object array -> text column, None where mask is False."""
    series = pd.Series(values, dtype="str")
    if mask is not None:
        series = series.where(mask)
    return series


def _ints(values: np.ndarray, mask: np.ndarray) -> pd.Series:
    """Integers -> nullable Int64, missing where mask is False."""
    return pd.Series(pd.array(values, dtype="Int64")).where(mask)


def _pick(rng: np.random.Generator, options, n: int) -> np.ndarray:
    """n random picks (uniform) from a list, as an object array."""
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]


def _json_options(options) -> list[str]:
    """JSON text of each option, keys sorted, non-ASCII kept readable."""
    return [json.dumps(item, ensure_ascii=False, sort_keys=True) for item in options]


class _CustomerBuilder:
    """Lays customers out in company trees, then fills every column vectorised."""

    def __init__(self, n: int, rng: np.random.Generator, now: datetime):
        self.n, self.rng, self.now = n, rng, now
        self.n_companies = max(1, n // 10)

    def build(self) -> pd.DataFrame:
        """All customer columns; rows in tree order (row_order shuffles them at the end)."""
        n, rng = self.n, self.rng
        self._layout()
        region = rng.choice(len(MOBILE_TEMPLATES), n, p=_weights([t[4] for t in MOBILE_TEMPLATES]))
        self.region = region
        # Keys are numbered in a shuffled order so that key order says nothing about trees.
        key_numbers = rng.permutation(n)
        keys = "CUST" + pd.Series(key_numbers).astype(str).str.zfill(8)
        self.keys = keys.to_numpy(dtype=object)
        parent_key = np.where(self.parent >= 0, self.keys[np.maximum(self.parent, 0)], None)
        first, last = self._names(region)
        mobile, has_mobile = self._mobiles(region)
        has_email = rng.random(n) < 0.7
        has_external = rng.random(n) < 0.6
        # Registration needs a primary identifier: rows without a mobile always get an email.
        has_email |= ~has_mobile
        # Email local parts follow the first name when it is Latin, else a Latin nickname.
        latin_first = np.isin(first, NAMES["latin"][0])
        local = np.where(latin_first, pd.Series(first, dtype=object).str.lower().to_numpy(dtype=object),
                         _pick(rng, [f.lower() for f in NAMES["latin"][0]], n))
        domain = _pick(rng, EMAIL_DOMAINS, n)
        number_text = pd.Series(key_numbers).astype(str)
        email = local + "." + number_text.to_numpy(dtype=object) + "@" + domain
        external_id = "EXT-" + number_text.str.zfill(8)
        has_card = rng.random(n) < 0.4
        card_number = "7788" + number_text.str.zfill(12)
        card_series = _pick(rng, ["FLEETCARD", "FLEETGOLD"], n)
        card_status = np.where(rng.random(n) < 0.95, "ACTIVE", "SUSPENDED").astype(object)
        loyalty = np.where(rng.random(n) < 0.85, "loyalty", "non_loyalty").astype(object)

        now_s = int(self.now.timestamp())
        start_s = int(datetime(2005, 1, 1, tzinfo=timezone.utc).timestamp())
        # A fraction of the span, not rng.integers(start_s, now_s): how many values integers()
        # draws depends on its range, so with today in the range every later column (and so
        # which rows are bad, duplicated or touched) changed from one day to the next.
        registered = start_s + (rng.random(n) * (now_s - 86400 - start_s)).astype(np.int64)
        updated = registered + (rng.random(n) * (now_s - registered)).astype(np.int64)
        enrolled = (loyalty == "loyalty") & (rng.random(n) < 0.35)
        tier_expiry = registered + rng.integers(365, 5 * 365, n) * 86400
        points_expiry = registered + rng.integers(180, 3 * 365, n) * 86400
        viewed = rng.random(n) < 0.3
        viewed_day = (registered + (rng.random(n) * (now_s - registered))).astype(np.int64) // 86400
        source_other = rng.random(n) < 0.04
        has_till = rng.random(n) < 0.8
        has_ext = rng.random(n) < 0.3
        has_custom = rng.random(n) < 0.2
        self.has = {"mobile": has_mobile, "email": has_email, "external_id": has_external,
                    "card": has_card, "enrolled": enrolled}

        company_ids = self.company_ids()
        in_company = self.company >= 0
        frame = pd.DataFrame({
            "customer_key": _text(self.keys),
            "first_name": _text(first),
            "last_name": _text(last, rng.random(n) < 0.95),
            "mobile": _text(mobile, has_mobile),
            "email": _text(email, has_email),
            "external_id": _text(external_id.to_numpy(dtype=object), has_external),
            "card_number": _text(card_number.to_numpy(dtype=object), has_card),
            "card_series_code": _text(card_series, has_card),
            "card_status_label": _text(card_status, has_card),
            "loyalty_type": _text(loyalty),
            "company_external_id": _text(company_ids[np.maximum(self.company, 0)], in_company),
            "role_code": _text(ROLES[np.maximum(self.role, 0)], in_company),
            "parent_customer_key": _text(parent_key),
            "program_id": _ints(np.where(rng.random(n) < 0.7, 101, 102), enrolled),
            "tier_number": _ints(rng.integers(1, 5, n), enrolled),
            "loyalty_points": _ints(rng.integers(0, 50_000, n), enrolled),
            "tier_expiry_date": _seconds(np.where(enrolled, tier_expiry, np.nan)),
            "points_expiry_date": _seconds(np.where(enrolled, points_expiry, np.nan)),
            "registered_at": _seconds(registered),
            "last_viewed_date": _dates(viewed_day, viewed),
            "till_code": _text("TILL-" + pd.Series(rng.integers(1, 500, n)).astype(str).str.zfill(4)
                               .to_numpy(dtype=object), has_till),
            "source": _text(np.where(source_other, "ECOMMERCE", "INSTORE").astype(object)),
            "account_id": _text(np.full(n, "acc-web-01", dtype=object), source_other),
            "extended_fields": _text(_pick(rng, _json_options(CUSTOMER_EXTENDED), n), has_ext),
            "custom_fields": _text(_pick(rng, _json_options(CUSTOMER_CUSTOM), n), has_custom),
            "updated_at": _seconds(updated),
        })
        self.row_order = rng.permutation(n)
        return frame

    def company_ids(self) -> np.ndarray:
        """External ids of the generated companies, by company index."""
        return _company_ids(self.n_companies)

    def _layout(self) -> None:
        """Company index, role and parent row of every row; rows grouped by company."""
        n, rng, nc = self.n, self.rng, self.n_companies
        standalone = int(n * 0.02) if n >= 50 else 0  # a few customers belong to no company
        placed = n - standalone
        nc = min(nc, placed)
        self.n_companies = max(nc, 1)
        # Company sizes: skewed (a few big fleets, many small ones), at least one each.
        weights = rng.lognormal(0.0, 1.0, nc)
        sizes = 1 + rng.multinomial(placed - nc, weights / weights.sum()) if nc else np.zeros(0, int)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        company = np.full(n, -1, dtype=np.int64)
        company[:placed] = np.repeat(np.arange(nc), sizes)
        pos = np.zeros(n, dtype=np.int64)
        pos[:placed] = np.arange(placed) - np.repeat(starts, sizes)
        # Per company: 1 GFA, a few SFAs, FAs with about 8 FCs each.
        n_sfa = np.where(sizes >= 2, np.maximum(1, sizes // 60), 0)
        n_fa = np.where(sizes >= 3, np.maximum(1, (sizes - 1 - n_sfa) // 9), 0)
        c = np.maximum(company, 0)
        s_sfa, s_fa = n_sfa[c] if nc else pos, n_fa[c] if nc else pos
        role = np.full(n, -1, dtype=np.int64)
        role[pos == 0] = GFA
        role[(pos >= 1) & (pos <= s_sfa)] = SFA
        role[(pos > s_sfa) & (pos <= s_sfa + s_fa)] = FA
        role[pos > s_sfa + s_fa] = FC
        role[company < 0] = -1
        start = starts[c] if nc else pos
        parent = np.full(n, -1, dtype=np.int64)
        draw = rng.integers(0, 1 << 30, n)
        parent = np.where(role == SFA, start, parent)
        parent = np.where(role == FA, start + 1 + draw % np.maximum(s_sfa, 1), parent)
        parent = np.where(role == FC, start + 1 + s_sfa + draw % np.maximum(s_fa, 1), parent)
        self.company, self.role, self.parent, self.starts = company, role, parent, starts
        self.n_sfa, self.n_fa = n_sfa, n_fa

    def _names(self, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last names, in a script that fits the customer's region."""
        n, rng = self.n, self.rng
        probs = np.array([SCRIPT_BY_REGION[t[0]] for t in MOBILE_TEMPLATES], dtype=float)
        cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)[region]
        script = (rng.random(n)[:, None] > cumulative).sum(axis=1).clip(0, len(SCRIPTS) - 1)
        first = np.empty(n, dtype=object)
        last = np.empty(n, dtype=object)
        for index, name in enumerate(SCRIPTS):
            rows = script == index
            firsts, lasts = NAMES[name]
            first[rows] = _pick(rng, firsts, int(rows.sum()))
            last[rows] = _pick(rng, lasts, int(rows.sum()))
        return first, last

    def _mobiles(self, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unique valid mobiles (E.164 digits, some with '+'); about 8% of customers have none."""
        n, rng = self.n, self.rng
        mobile = np.empty(n, dtype=object)
        for index, (code, cc, prefix, digits, _weight) in enumerate(MOBILE_TEMPLATES):
            rows = np.flatnonzero(region == index)
            capacity = 10**digits
            if len(rows) > capacity:
                raise ValueError(f"too many customers for region {code}: at most {capacity}")
            # rank * odd-non-5 multiplier mod 10^k is a bijection: unique, scattered numbers.
            serial = (np.arange(len(rows), dtype=np.int64) * 7_919 + int(rng.integers(capacity))) % capacity
            mobile[rows] = (cc + prefix + pd.Series(serial).astype(str).str.zfill(digits)).to_numpy(dtype=object)
        plus = rng.random(n) < 0.25
        mobile[plus] = "+" + mobile[plus]
        has_mobile = rng.random(n) < 0.92
        return mobile, has_mobile


def _weights(values) -> np.ndarray:
    """Normalised probabilities."""
    array = np.asarray(values, dtype=float)
    return array / array.sum()


def _dates(days: np.ndarray, mask: np.ndarray) -> pd.Series:
    """Epoch days -> datetime.date objects, None where mask is False."""
    values = pd.Series(days.astype("datetime64[D]")).dt.date.astype(object)
    return values.where(mask, None)


def _company_ids(n_companies: int) -> np.ndarray:
    """External ids FLEET-000001 ... for company indexes 0..n-1."""
    return ("FLEET-" + pd.Series(np.arange(1, n_companies + 1)).astype(str).str.zfill(6)).to_numpy(dtype=object)


def _build_companies(nc: int, rng: np.random.Generator, now: datetime) -> pd.DataFrame:
    """Fleet companies; about 10% belong to a holding company (one level, so no cycles)."""
    ids = _company_ids(nc)
    names = (_pick(rng, COMPANY_BASES, nc) + " " + _pick(rng, COMPANY_SUFFIXES, nc))
    names = pd.Series(names, dtype="str").str.strip()
    holdings = max(1, nc // 50)
    has_parent = (np.arange(nc) >= holdings) & (rng.random(nc) < 0.1)
    parent = ids[rng.integers(0, holdings, nc)]
    now_s = int(now.timestamp())
    updated = now_s - rng.integers(86400, 3 * 365 * 86400, nc)
    return pd.DataFrame({
        "company_external_id": _text(ids),
        "company_name": names,
        "hierarchy_code": _text(np.full(nc, HIERARCHY_CODE, dtype=object)),
        "parent_company_external_id": _text(parent, has_parent),
        "extended_fields": _text(_pick(rng, _json_options(COMPANY_EXTENDED), nc), rng.random(nc) < 0.5),
        "updated_at": _seconds(updated),
    })[list(COMPANY_COLUMNS)]


def _add_bad_companies(companies: pd.DataFrame, rng: np.random.Generator, bad_ratio: float, now: datetime):
    """Append a few bad companies (no customers belong to them)."""
    count = int(np.ceil(len(companies) * bad_ratio / 10)) if bad_ratio > 0 else 0
    if count == 0:
        return companies, pd.DataFrame({"company_external_id": pd.Series([], dtype="str"),
                                        "kind": pd.Series([], dtype="str")})
    kinds = [BAD_COMPANY_KINDS[i % len(BAD_COMPANY_KINDS)] for i in range(count)]
    rows = []
    for i, kind in enumerate(kinds):
        rows.append({
            "company_external_id": f"FLEET-BAD-{i + 1:05d}",
            "company_name": None if kind == "missing_name" else f"Broken Fleet {i + 1}",
            "hierarchy_code": "code-unknown" if kind == "unknown_hierarchy" else HIERARCHY_CODE,
            "parent_company_external_id": "FLEET-NOPE" if kind == "unknown_parent_company" else None,
            "extended_fields": None,
            "updated_at": pd.Timestamp(now) - pd.Timedelta(days=int(rng.integers(1, 300))),
        })
    bad = pd.DataFrame(rows)
    bad["updated_at"] = bad["updated_at"].astype("datetime64[us, UTC]")
    for column in COMPANY_COLUMNS:
        if column != "updated_at":
            bad[column] = bad[column].astype("str")
    combined = pd.concat([companies, bad[list(COMPANY_COLUMNS)]], ignore_index=True)
    truth = pd.DataFrame({"company_external_id": bad["company_external_id"], "kind": kinds})
    return combined, truth


def _make_bad_customers(
    frame: pd.DataFrame, builder: _CustomerBuilder, rng: np.random.Generator, bad_ratio: float, now: datetime
) -> pd.DataFrame:
    """Break round(n * bad_ratio) leaf rows (FCs), each one way; returns (customer_key, kind)."""
    n_bad = int(round(builder.n * bad_ratio))
    leaves = np.flatnonzero(builder.role == FC)
    if n_bad == 0 or len(leaves) == 0:
        return pd.DataFrame({"customer_key": pd.Series([], dtype="str"), "kind": pd.Series([], dtype="str")})
    n_bad = min(n_bad, len(leaves))
    rows = np.sort(rng.choice(leaves, n_bad, replace=False))
    kinds = np.asarray(BAD_KINDS, dtype=object)[rng.permutation(np.arange(n_bad) % len(BAD_KINDS))]
    breaker = _Breaker(frame, builder, rng, now)
    for kind in BAD_KINDS:
        selected = rows[kinds == kind]
        if len(selected):
            kinds[np.isin(rows, selected)] = breaker.apply(kind, selected)
    return pd.DataFrame({"customer_key": _text(builder.keys[rows]), "kind": _text(kinds)})


class _Breaker:
    """Makes selected rows bad, one kind at a time (few rows: plain indexed assignment)."""

    def __init__(self, frame: pd.DataFrame, builder: _CustomerBuilder, rng: np.random.Generator, now: datetime):
        self.frame, self.builder, self.rng, self.now = frame, builder, rng, now

    def set(self, rows: np.ndarray, column: str, values) -> None:
        """Assign values to rows of one column."""
        self.frame.loc[rows, column] = values

    def apply(self, kind: str, rows: np.ndarray) -> np.ndarray:
        """Break rows one way; return the kind actually applied per row."""
        applied = np.full(len(rows), kind, dtype=object)
        if kind in ("duplicate_mobile", "duplicate_email"):
            column = "mobile" if kind == "duplicate_mobile" else "email"
            if len(rows) % 2:  # an unpaired row would make a good row a duplicate: break it otherwise
                applied[-1] = "invalid_mobile"
                self.apply("invalid_mobile", rows[-1:])
                rows = rows[:-1]
            first, second = rows[0::2], rows[1::2]
            source = self.frame.loc[first, column].to_numpy(dtype=object).copy()
            missing = pd.isna(source)
            if column == "mobile":  # prefix 98765 is not used by the IN template: no clash with good rows
                source[missing] = "9198765" + pd.Series(first[missing] % 100000).astype(str).str.zfill(5).to_numpy(dtype=object)
            else:
                source[missing] = "dup." + pd.Series(first[missing]).astype(str).to_numpy(dtype=object) + "@example.com"
            self.set(first, column, source)
            self.set(second, column, source)
            return applied
        getattr(self, kind)(rows)
        return applied

    def invalid_mobile(self, rows):
        self.set(rows, "mobile", "91" + pd.Series(rows % 100000).astype(str).str.zfill(5).to_numpy(dtype=object))

    def malformed_email(self, rows):
        shapes = np.array(["{}@@example.com", "{}.example.com", "{} @example.com", "{}@"], dtype=object)
        picks = shapes[np.arange(len(rows)) % len(shapes)]
        self.set(rows, "email", [shape.format(f"broken{row}") for shape, row in zip(picks, rows)])

    def no_identifier(self, rows):
        for column in ("mobile", "email", "external_id", "card_number", "card_series_code", "card_status_label"):
            self.set(rows, column, None)

    def future_registered_at(self, rows):
        days = self.rng.integers(30, 400, len(rows))
        self.set(rows, "registered_at", pd.Timestamp(self.now) + pd.to_timedelta(days, unit="D"))

    def registered_before_1990(self, rows):
        self.set(rows, "registered_at", pd.Timestamp("1985-06-01T10:00:00+00:00"))

    def expiry_before_registration(self, rows):
        registered = self.frame.loc[rows, "registered_at"]
        self.set(rows, "program_id", 101)
        self.set(rows, "tier_number", 2)
        self.set(rows, "loyalty_points", 500)
        self.set(rows, "loyalty_type", "loyalty")
        self.set(rows, "tier_expiry_date", (registered - pd.Timedelta(days=30)).to_numpy())
        self.set(rows, "points_expiry_date", (registered + pd.Timedelta(days=365)).to_numpy())

    def future_last_viewed_date(self, rows):
        self.set(rows, "last_viewed_date", (self.now + timedelta(days=90)).date())

    def unknown_company(self, rows):
        self.set(rows, "company_external_id", [f"FLEET-MISSING-{row}" for row in rows])

    def parent_in_other_company(self, rows):
        b = self.builder
        fa_rows = np.flatnonzero(b.role == FA)
        first_fa = fa_rows[np.unique(b.company[fa_rows], return_index=True)[1]]
        if len(first_fa) < 2:
            return self.unknown_parent(rows)
        pick = first_fa[self.rng.integers(0, len(first_fa), len(rows))]
        clash = b.company[pick] == b.company[rows]
        # the next company's first FA is in another company, since there is one entry per company
        pick[clash] = first_fa[(np.searchsorted(first_fa, pick[clash]) + 1) % len(first_fa)]
        self.set(rows, "parent_customer_key", b.keys[pick])

    def wrong_parent_role(self, rows):
        b = self.builder
        self.set(rows, "parent_customer_key", b.keys[b.starts[b.company[rows]]])

    def unknown_parent(self, rows):
        self.set(rows, "parent_customer_key", [f"CUST-MISSING-{row}" for row in rows])

    def unknown_role(self, rows):
        self.set(rows, "role_code", "DRIVER")

    def partial_card(self, rows):
        self.set(rows, "card_number", ["7799" + str(row).zfill(12) for row in rows])
        self.set(rows, "card_series_code", None)
        self.set(rows, "card_status_label", "ACTIVE")

    def bad_loyalty_type(self, rows):
        self.set(rows, "loyalty_type", np.array(["gold", "LOYAL", "premium"], dtype=object)[np.arange(len(rows)) % 3])

    def bad_source(self, rows):
        self.set(rows, "source", "CARRIER_PIGEON")

    def extended_fields_array(self, rows):
        self.set(rows, "extended_fields", '["gender", "Male"]')

    def custom_fields_not_json(self, rows):
        self.set(rows, "custom_fields", '{"vehicle_count": 3')

    def tier_number_zero(self, rows):
        self.set(rows, "loyalty_type", "loyalty")
        self.set(rows, "program_id", 101)
        self.set(rows, "tier_number", 0)
        self.set(rows, "loyalty_points", 100)


# ---------------------------------------------------------------- loading into a database

TIMESTAMP_COLUMNS = {"updated_at", "registered_at", "tier_expiry_date", "points_expiry_date"}
INTEGER_COLUMNS = {"program_id", "tier_number", "loyalty_points"}
DATE_COLUMNS = {"last_viewed_date"}
PRIMARY_KEYS = {COMPANIES_TABLE: "company_external_id", CUSTOMERS_TABLE: "customer_key"}
INDEXES = {
    COMPANIES_TABLE: ("updated_at",),
    CUSTOMERS_TABLE: ("updated_at", "parent_customer_key", "company_external_id"),
}
TABLE_COLUMNS = {COMPANIES_TABLE: COMPANY_COLUMNS, CUSTOMERS_TABLE: CUSTOMER_COLUMNS}
LOAD_CHUNK_ROWS = 100_000


def _column_type(column: str, dialect: str) -> str:
    """SQL type of one input column (SQLite keeps timestamps as ISO-8601 text)."""
    if column in INTEGER_COLUMNS:
        return "INTEGER"
    if column in TIMESTAMP_COLUMNS:
        return "TIMESTAMPTZ" if dialect == "postgres" else "TEXT"
    if column in DATE_COLUMNS:
        return "DATE" if dialect == "postgres" else "TEXT"
    return "TEXT"


def _create_statements(table: str, dialect: str) -> list[str]:
    """DROP + CREATE TABLE + indexes for one input table."""
    key = PRIMARY_KEYS[table]
    columns = ",\n  ".join(
        f"{column} {_column_type(column, dialect)}" + (" PRIMARY KEY" if column == key else "")
        for column in TABLE_COLUMNS[table]
    )
    statements = [f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} (\n  {columns}\n)"]
    statements += [f"CREATE INDEX ix_{table}_{column} ON {table} ({column})" for column in INDEXES[table]]
    return statements


def _iso_timestamps(series: pd.Series) -> list:
    """UTC datetimes -> 'YYYY-MM-DDTHH:MM:SS+00:00' text (None for NaT), vectorised."""
    values = series.to_numpy(dtype="datetime64[s]")
    text = np.char.add(np.datetime_as_string(values, unit="s").astype(object), "+00:00")
    text[pd.isna(values)] = None
    return text.tolist()


def _sqlite_columns(frame: pd.DataFrame, columns) -> list[list]:
    """One Python list per column, with None for missing values, ready for executemany."""
    lists = []
    for column in columns:
        series = frame[column]
        if column in TIMESTAMP_COLUMNS:
            lists.append(_iso_timestamps(series))
        elif column in DATE_COLUMNS:
            lists.append([value.isoformat() if isinstance(value, date) else None for value in series])
        else:
            values = series.astype(object)
            lists.append(values.where(series.notna(), None).tolist())
    return lists


def load_sqlite(path: str | Path, companies: pd.DataFrame, customers: pd.DataFrame) -> None:
    """(Re)create fleet_companies and customers in a SQLite file and load the frames, one transaction."""
    connection = sqlite3.connect(str(path), timeout=60)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        with connection:
            for table, frame in ((COMPANIES_TABLE, companies), (CUSTOMERS_TABLE, customers)):
                for statement in _create_statements(table, "sqlite"):
                    connection.execute(statement)
                columns = TABLE_COLUMNS[table]
                insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                for start in range(0, len(frame), LOAD_CHUNK_ROWS):
                    chunk = frame.iloc[start:start + LOAD_CHUNK_ROWS]
                    connection.executemany(insert, zip(*_sqlite_columns(chunk, columns)))
    finally:
        connection.close()


def _copy_frame(cursor, table: str, frame: pd.DataFrame, columns) -> None:
    """COPY a frame into a PostgreSQL table in CSV chunks (\\N is NULL, so '' stays '')."""
    for start in range(0, len(frame), LOAD_CHUNK_ROWS):
        buffer = io.StringIO()
        frame.iloc[start:start + LOAD_CHUNK_ROWS][list(columns)].to_csv(
            buffer, header=False, index=False, na_rep="\\N", quoting=csv.QUOTE_MINIMAL
        )
        buffer.seek(0)
        cursor.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer
        )


def load_postgres(url: str, companies: pd.DataFrame, customers: pd.DataFrame) -> None:
    """(Re)create fleet_companies and customers in PostgreSQL and load the frames with COPY."""
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            for table, frame in ((COMPANIES_TABLE, companies), (CUSTOMERS_TABLE, customers)):
                for statement in _create_statements(table, "postgres"):
                    cursor.execute(statement)
                _copy_frame(cursor, table, frame, TABLE_COLUMNS[table])
            cursor.execute(f"ANALYZE {COMPANIES_TABLE}")
            cursor.execute(f"ANALYZE {CUSTOMERS_TABLE}")
    finally:
        connection.close()


# ---------------------------------------------------------------- changes for incremental runs

TOUCH_NAMES = tuple(name for script in SCRIPTS for name in NAMES[script][0])


def _is_postgres(conn) -> bool:
    """Whether conn (URL, path or DB-API connection) is PostgreSQL."""
    if isinstance(conn, str):
        return conn.startswith(("postgres://", "postgresql://"))
    return not isinstance(conn, sqlite3.Connection)


def touch(conn, fraction: float, seed: int = 11, *, now: datetime | None = None) -> list[str]:
    """Give a fraction of customers a new first name and updated_at = now; return their keys.

    conn is a SQLite path, a PostgreSQL URL, or an open sqlite3 / psycopg2 connection
    (committed here). Same seed and same table -> same customers.
    """
    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be in [0, 1]")
    now = now or datetime.now(timezone.utc)
    postgres = _is_postgres(conn)
    connection = conn
    if isinstance(conn, (str, Path)):
        if postgres:
            import psycopg2

            connection = psycopg2.connect(conn)
        else:
            connection = sqlite3.connect(str(conn), timeout=60)
    try:
        cursor = connection.cursor()
        cursor.execute(f"SELECT customer_key, first_name FROM {CUSTOMERS_TABLE} ORDER BY customer_key")
        current = cursor.fetchall()
        count = int(round(len(current) * fraction))
        if fraction > 0:
            count = max(count, 1)
        if count == 0:
            return []
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(current), count, replace=False))
        names = np.asarray(TOUCH_NAMES, dtype=object)
        picks = rng.integers(0, len(names), count)
        rows = []
        for index, pick in zip(chosen, picks):
            key, old_name = current[index]
            new_name = names[pick] if names[pick] != old_name else names[(pick + 1) % len(names)]
            rows.append((key, new_name))
        if postgres:
            _touch_postgres(cursor, rows, now)
        else:
            _touch_sqlite(cursor, rows, now)
        connection.commit()
        return [key for key, _ in rows]
    finally:
        if connection is not conn:
            connection.close()


def _touch_sqlite(cursor, rows: list[tuple[str, str]], now: datetime) -> None:
    """Apply new names through a temp table (UPDATE ... FROM, SQLite >= 3.33)."""
    cursor.execute("CREATE TEMP TABLE IF NOT EXISTS bench_touch (customer_key TEXT PRIMARY KEY, first_name TEXT)")
    cursor.execute("DELETE FROM bench_touch")
    cursor.executemany("INSERT INTO bench_touch VALUES (?, ?)", rows)
    stamp = now.astimezone(timezone.utc).isoformat(timespec="seconds")
    cursor.execute(
        f"UPDATE {CUSTOMERS_TABLE} SET first_name = t.first_name, updated_at = ? "
        f"FROM bench_touch t WHERE {CUSTOMERS_TABLE}.customer_key = t.customer_key",
        (stamp,),
    )
    cursor.execute("DROP TABLE bench_touch")


def _touch_postgres(cursor, rows: list[tuple[str, str]], now: datetime) -> None:
    """Apply new names through a temp table loaded with COPY."""
    cursor.execute("CREATE TEMP TABLE bench_touch (customer_key TEXT PRIMARY KEY, first_name TEXT) ON COMMIT DROP")
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    buffer.seek(0)
    cursor.copy_expert("COPY bench_touch (customer_key, first_name) FROM STDIN WITH (FORMAT csv)", buffer)
    cursor.execute(
        f"UPDATE {CUSTOMERS_TABLE} c SET first_name = t.first_name, updated_at = %s "
        "FROM bench_touch t WHERE c.customer_key = t.customer_key",
        (now,),
    )


# ---------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    """Generate a warehouse and load it into SQLite or PostgreSQL."""
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, required=True, help="number of customers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-ratio", type=float, default=0.03, help="fraction of customers made bad")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--sqlite", metavar="PATH", help="SQLite file to (re)create the tables in")
    target.add_argument("--postgres", metavar="URL", help="PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1:5432/db")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    warehouse = generate(args.customers, seed=args.seed, bad_ratio=args.bad_ratio)
    generated = time.perf_counter()
    if args.sqlite:
        load_sqlite(args.sqlite, warehouse.companies, warehouse.customers)
    else:
        load_postgres(args.postgres, warehouse.companies, warehouse.customers)
    loaded = time.perf_counter()
    print(
        f"{len(warehouse.companies)} companies, {len(warehouse.customers)} customers "
        f"({len(warehouse.bad_customers)} bad customers, {len(warehouse.bad_companies)} bad companies); "
        f"generated in {generated - started:.1f} s, loaded into {args.sqlite or _mask_url(args.postgres)} "
        f"in {loaded - generated:.1f} s"
    )
    return 0


def _mask_url(url: str) -> str:
    """A database URL without its password, for printing."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


if __name__ == "__main__":
    sys.exit(main())
