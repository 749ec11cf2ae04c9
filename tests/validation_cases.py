"""The bad-row catalogue of the quality gate: a small valid warehouse plus one case per kind of bad row.

``catalogue_frames()`` returns the two canonical frames (loadable into a database too) and
``expected_quarantine()`` what the gate must quarantine: {(entity, key): {checks}}.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import pandas as pd

from associate import tables
from associate.models import HierarchyDefinition, HierarchyRole

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
MAIN = "code-association2"
SMALL = "code-small"
SKIP = "code-skip"


def hierarchies() -> list[HierarchyDefinition]:
    """GFA -> SFA -> FA -> FC (maxChild 5000), a small FA -> FC (maxChild 2), one allowing skips."""
    chain = [("GFA", "SFA"), ("SFA", "FA"), ("FA", "FC"), ("FC", None)]
    return [
        HierarchyDefinition(code=MAIN, name="Fleet association",
                            roles=[HierarchyRole(code=r, childRoleCode=c, maxChild=5000) for r, c in chain]),
        HierarchyDefinition(code=SMALL, name="Small fleet",
                            roles=[HierarchyRole(code="FA", childRoleCode="FC", maxChild=2),
                                   HierarchyRole(code="FC")]),
        HierarchyDefinition(code=SKIP, name="Fleet with skips", skipRoleAllowed=True,
                            roles=[HierarchyRole(code=r, childRoleCode=c) for r, c in chain]),
    ]


_serial = itertools.count(1)


def _mobile() -> str:
    """A fresh valid Indian mobile (E.164 digits, no +)."""
    return f"9198765{next(_serial):05d}"


def company(key: str, **fields) -> dict:
    """A valid company row; ``fields`` override columns."""
    row = {"company_external_id": key, "company_name": f"Company {key}", "hierarchy_code": MAIN,
           "parent_company_external_id": None, "extended_fields": '{"segment": "fleet"}',
           "updated_at": "2025-12-01T08:00:00+00:00"}
    row.update(fields)
    return row


def customer(key: str, **fields) -> dict:
    """A valid customer row: an FC under FA1 of company CO1 unless ``fields`` say otherwise."""
    row = {
        "customer_key": key, "first_name": "Asha", "last_name": "Rao", "mobile": _mobile(),
        "email": f"{str(key).lower()}@example.com", "external_id": f"EXT-{key}",
        "card_number": None, "card_series_code": None, "card_status_label": None,
        "loyalty_type": "loyalty", "company_external_id": "CO1", "role_code": "FC",
        "parent_customer_key": "FA1", "program_id": None, "tier_number": None,
        "loyalty_points": None, "tier_expiry_date": None, "points_expiry_date": None,
        "registered_at": "2024-03-01T10:00:00+05:30", "last_viewed_date": None, "till_code": "till.01",
        "source": "INSTORE", "account_id": None, "extended_fields": None, "custom_fields": None,
        "updated_at": "2025-12-01T08:00:00+00:00",
    }
    row.update(fields)
    return row


def valid_companies() -> list[dict]:
    """Companies every case may use: CO1 (main), CO2 (small), a holding company and its subsidiary."""
    return [
        company("CO1"),
        company("CO2", hierarchy_code=SMALL, extended_fields=None),
        company("CO-HOLD", company_name="Holding Ltd"),
        company("CO-SUB", parent_company_external_id="CO-HOLD", updated_at=datetime(2025, 1, 1)),
        company("CO-SKIP", hierarchy_code=SKIP),
    ]


def valid_customers() -> list[dict]:
    """A full valid tree in CO1, a full small tree in CO2 and rows exercising every optional field."""
    return [
        customer("GFA1", role_code="GFA", parent_customer_key=None, first_name="अनिल"),
        customer("SFA1", role_code="SFA", parent_customer_key="GFA1", last_name="王"),
        customer("FA1", role_code="FA", parent_customer_key="SFA1", mobile="+" + _mobile()),
        customer("FC1", email="Zoë.Ünal@exämple.de", registered_at=datetime(2023, 5, 1, 9, 30)),
        customer("FC2", mobile="447911123456", email=None, external_id=None,
                 card_number="CARD-0001", card_series_code="SERIES-A", card_status_label="ACTIVE",
                 program_id=7, tier_number=1, loyalty_points=120,
                 tier_expiry_date="2027-01-01T00:00:00Z", points_expiry_date="2026-12-31T23:59:59+00:00",
                 last_viewed_date="2026-01-10", extended_fields='{"gender": "F"}',
                 custom_fields='{"vehicle_count": 3}', loyalty_type="non_loyalty", source="WECHAT"),
        customer("FC3", mobile=None, email=None, external_id="EXT-ONLY-FC3", account_id="acct-9",
                 registered_at="2025-06-30", last_viewed_date=date(2025, 12, 24)),
        customer("FA2", company_external_id="CO2", role_code="FA", parent_customer_key=None),
        customer("FC4", company_external_id="CO2", parent_customer_key="FA2"),
        customer("FC5", company_external_id="CO2", parent_customer_key="FA2",
                 registered_at=pd.Timestamp("1990-01-01", tz="UTC")),
        customer("LONE1", company_external_id=None, role_code=None, parent_customer_key=None),
        customer("SUB-FA", company_external_id="CO-SUB", role_code="FA", parent_customer_key=None),
        customer("SKIP-GFA", company_external_id="CO-SKIP", role_code="GFA", parent_customer_key=None),
        customer("SKIP-FC", company_external_id="CO-SKIP", role_code="FC", parent_customer_key="SKIP-GFA"),
        customer("NAME100", first_name="x" * 100, external_id="E" * 50),
        customer("TABNAME", first_name="Line\nBreak\tTab"),
    ]


@dataclass
class Case:
    """One kind of bad row: the rows to add and what the gate must say about them."""

    name: str
    customers: list[dict] = field(default_factory=list)
    companies: list[dict] = field(default_factory=list)
    expected: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # Where the rows can be stored: "any" database; "text_ts" only with text timestamp
    # columns (garbage dates); "none" (text in an integer column, a duplicate or missing key).
    db: str = "any"
    reason_contains: dict[tuple[str, str, str], str] = field(default_factory=dict)


C, K = tables.ENTITY_CUSTOMER, tables.ENTITY_COMPANY
# A row without a key is named "(row N)" by its position; tests compare it as this.
MISSING_KEY = "(row ?)"


def _one(name: str, key: str, checks: set[str], db: str = "any", reason: str | None = None,
         **fields) -> Case:
    """A case of one bad customer row."""
    case = Case(name, customers=[customer(key, **fields)], expected={(C, key): checks}, db=db)
    if reason:
        case.reason_contains[(C, key, next(iter(checks)))] = reason
    return case


def cases() -> list[Case]:
    """Every bad-row kind the gate knows, each with its own keys and values."""
    shared_mobile = _mobile()
    return [
        _one("no_primary_identifier", "B-NOID", {"primary_identifier"}, mobile=None, email=None, external_id=None),
        _one("invalid_mobile", "B-MOB1", {"mobile_valid"}, mobile="91123456",
             reason="mobile 91**3456 is not a valid number for region IN"),
        _one("mobile_not_digits", "B-MOB2", {"mobile_valid"}, mobile="98-765-ABC"),
        _one("mobile_invalid_for_gb", "B-MOB3", {"mobile_valid"}, mobile="441234",
             reason="for region GB"),
        _one("invalid_email", "B-MAIL1", {"email_valid"}, email="john@@example.com"),
        _one("email_special_use_domain", "B-MAIL2", {"email_valid"}, email="ops@fleet.local"),
        Case("duplicate_mobile", customers=[customer("B-DUPM1", mobile=shared_mobile),
                                            customer("B-DUPM2", mobile="+" + shared_mobile)],
             expected={(C, "B-DUPM1"): {"mobile_unique"}, (C, "B-DUPM2"): {"mobile_unique"}},
             reason_contains={(C, "B-DUPM1", "mobile_unique"): "also used by customer B-DUPM2"}),
        Case("duplicate_email", customers=[customer("B-DUPE1", email="same@example.com"),
                                           customer("B-DUPE2", email="Same@Example.com")],
             expected={(C, "B-DUPE1"): {"email_unique"}, (C, "B-DUPE2"): {"email_unique"}}),
        Case("duplicate_external_id", customers=[customer("B-DUPX1", external_id="EXT-SAME"),
                                                 customer("B-DUPX2", external_id="EXT-SAME")],
             expected={(C, "B-DUPX1"): {"external_id_unique"}, (C, "B-DUPX2"): {"external_id_unique"}}),
        Case("duplicate_card_number",
             customers=[customer(k, card_number="CARD-SAME", card_series_code="S", card_status_label="ACTIVE")
                        for k in ("B-DUPC1", "B-DUPC2")],
             expected={(C, "B-DUPC1"): {"card_number_unique"}, (C, "B-DUPC2"): {"card_number_unique"}}),
        _one("partial_card", "B-CARD", {"card_fields_complete"}, card_number="CARD-77",
             reason="missing: card_series_code, card_status_label"),
        # The reference: a cardnumber needs seriesId or seriesCode, and a statusLabel.
        _one("card_without_status_label", "B-CARDS", {"card_fields_complete"}, card_number="CARD-78",
             card_series_code="FLEET", reason="missing: card_status_label"),
        _one("card_with_blank_series_code", "B-CARDB", {"card_fields_complete"}, card_number="CARD-79",
             card_series_code="  ", card_status_label="ACTIVE", reason="missing: card_series_code"),
        Case("duplicate_customer_key",
             customers=[customer("B-DUPK", email="dupk1@example.com", external_id="EXT-DUPK1"),
                        customer("B-DUPK", email="dupk2@example.com", external_id="EXT-DUPK2")],
             expected={(C, "B-DUPK"): {"customer_key_unique"}}, db="none"),
        Case("missing_customer_key", customers=[customer(None, email="nokey@example.com", external_id="EXT-NOKEY")],
             expected={(C, MISSING_KEY): {"customer_key_present"}}, db="none"),
        _one("first_name_too_long", "B-NAME", {"first_name_length"}, first_name="अ" * 101,
             reason="first_name is 101 characters long; at most 100"),
        _one("nul_byte_in_first_name", "B-NUL", {"first_name_valid"}, db="none", first_name="Ana\x00Maria"),
        _one("tab_in_external_id", "B-TAB", {"external_id_valid"}, external_id="EXT\tTAB"),
        _one("external_id_too_long", "B-EXTL", {"external_id_length"}, external_id="X" * 51),
        _one("bad_loyalty_type", "B-LTYPE", {"loyalty_type_allowed"}, loyalty_type="gold"),
        _one("missing_loyalty_type", "B-LTYPE0", {"loyalty_type_present"}, loyalty_type=None),
        _one("bad_source", "B-SRC", {"source_allowed"}, source="SMS"),
        _one("missing_source", "B-SRC0", {"source_present"}, source=" "),
        _one("extended_fields_array", "B-EXTF", {"extended_fields_json"}, extended_fields="[1, 2]"),
        _one("custom_fields_broken", "B-CUSF", {"custom_fields_json"}, custom_fields='{"a": 1'),
        _one("tier_number_zero", "B-TIER0", {"tier_number_min"}, program_id=7, tier_number=0),
        _one("tier_number_fraction", "B-TIERF", {"tier_number_integer"}, db="none", program_id=7,
             tier_number=1.5),
        _one("loyalty_points_text", "B-PTS", {"loyalty_points_integer"}, db="none", program_id=7,
             loyalty_points="lots"),
        _one("program_id_not_integer", "B-PID", {"program_id_integer"}, db="none", program_id="P7"),
        _one("points_expiry_garbage", "B-PEXPG", {"points_expiry_date_parseable"}, db="text_ts", program_id=7,
             points_expiry_date="31/12/2026"),
        _one("loyalty_points_negative", "B-PTSN", {"loyalty_points_min"}, program_id=7, loyalty_points=-5),
        _one("enrolment_without_program", "B-PROG", {"program_id_required"}, tier_number=2),
        _one("registered_at_missing", "B-REG0", {"registered_at_present"}, registered_at=None),
        _one("registered_at_garbage", "B-REGG", {"registered_at_parseable"}, db="text_ts",
             registered_at="last tuesday"),
        _one("registered_at_future", "B-REGF", {"registered_at_not_future"},
             registered_at="2026-02-01T00:00:00+00:00"),
        _one("registered_before_1990", "B-REGO", {"registered_at_too_old"}, registered_at="1989-12-31T23:59:59Z",
             reason="before 1990-01-01"),
        _one("tier_expiry_before_registration", "B-TEXP", {"tier_expiry_after_registration"}, program_id=7,
             tier_expiry_date="2024-01-01T00:00:00+00:00"),
        _one("points_expiry_before_registration", "B-PEXP", {"points_expiry_after_registration"}, program_id=7,
             points_expiry_date="2023-01-01T00:00:00+00:00"),
        _one("tier_expiry_garbage", "B-TEXPG", {"tier_expiry_date_parseable"}, db="text_ts", program_id=7,
             tier_expiry_date="2027-13-45"),
        _one("last_viewed_in_future", "B-LVF", {"last_viewed_date_not_future"}, last_viewed_date="2026-03-01"),
        _one("last_viewed_garbage", "B-LVG", {"last_viewed_date_parseable"}, db="text_ts",
             last_viewed_date="soon"),
        _one("updated_at_garbage", "B-UPD", {"updated_at_parseable"}, db="text_ts", updated_at="n/a"),
        _one("unknown_company", "B-COMP", {"company_exists", "parent_same_company"},
             company_external_id="CO-NOPE"),
        _one("role_without_company", "B-NOCO", {"company_required"}, company_external_id=None,
             parent_customer_key=None),
        _one("company_without_role", "B-NOROLE", {"role_code_required"}, role_code=None, parent_customer_key=None),
        _one("role_not_in_hierarchy", "B-ROLE", {"role_in_hierarchy"}, role_code="CEO",
             reason="role CEO is not a role of hierarchy code-association2"),
        _one("unknown_parent", "B-PAR", {"parent_exists"}, parent_customer_key="NOBODY"),
        _one("parent_in_other_company", "B-PCO", {"parent_same_company"}, company_external_id="CO2",
             parent_customer_key="FA1", reason="belongs to company CO1, not CO2"),
        _one("role_does_not_match_parent", "B-RPAR", {"role_matches_parent"}, parent_customer_key="SFA1",
             reason="expected child role: FA"),
        _one("skip_level_not_allowed", "B-SKIPX", {"role_matches_parent"}, parent_customer_key="GFA1"),
        Case("parent_cycle",
             customers=[customer("B-CYC1", role_code="FA", parent_customer_key="B-CYC2"),
                        customer("B-CYC2", role_code="FA", parent_customer_key="B-CYC1"),
                        customer("B-CYC3", role_code="FC", parent_customer_key="B-CYC1"),
                        customer("B-SELF", role_code="FA", parent_customer_key="B-SELF")],
             expected={(C, "B-CYC1"): {"parent_cycle", "role_matches_parent"},
                       (C, "B-CYC2"): {"parent_cycle", "role_matches_parent"},
                       (C, "B-CYC3"): {"parent_rejected"},
                       (C, "B-SELF"): {"parent_cycle", "role_matches_parent"}}),
        Case("parent_over_max_child",
             customers=[customer("B-MAXFA", company_external_id="CO2", role_code="FA", parent_customer_key=None)]
             + [customer(f"B-MAXFC{i}", company_external_id="CO2", parent_customer_key="B-MAXFA") for i in (1, 2, 3)],
             expected={(C, f"B-MAXFC{i}"): {"parent_max_child"} for i in (1, 2, 3)},
             reason_contains={(C, "B-MAXFC1", "parent_max_child"): "has 3 children; role FA allows at most 2"}),
        Case("parent_rejected_transitively",
             customers=[customer("B-DEPS", role_code="SFA", parent_customer_key="GFA1", email="broken@"),
                        customer("B-DEPF", role_code="FA", parent_customer_key="B-DEPS"),
                        customer("B-DEPC", role_code="FC", parent_customer_key="B-DEPF")],
             expected={(C, "B-DEPS"): {"email_valid"}, (C, "B-DEPF"): {"parent_rejected"},
                       (C, "B-DEPC"): {"parent_rejected"}},
             reason_contains={(C, "B-DEPC", "parent_rejected"): "parent customer B-DEPF depends on B-DEPS"}),
        Case("company_unknown_hierarchy_and_dependents",
             companies=[company("CO-BADH", hierarchy_code="code-nope"),
                        company("CO-UNDER", parent_company_external_id="CO-BADH")],
             customers=[customer("B-CUST-BADH", company_external_id="CO-BADH", role_code="FA", parent_customer_key=None),
                        customer("B-CUST-UNDER", company_external_id="CO-UNDER", role_code="FA", parent_customer_key=None)],
             expected={(K, "CO-BADH"): {"company_hierarchy_exists"}, (K, "CO-UNDER"): {"parent_company_rejected"},
                       (C, "B-CUST-BADH"): {"company_rejected"}, (C, "B-CUST-UNDER"): {"company_rejected"}},
             reason_contains={(C, "B-CUST-UNDER", "company_rejected"): "company CO-UNDER is quarantined"}),
        Case("missing_company_key", companies=[company(None, company_name="Nameless key")],
             expected={(K, MISSING_KEY): {"company_key_present"}}, db="none"),
        Case("company_missing_name", companies=[company("CO-NONAME", company_name=None)],
             expected={(K, "CO-NONAME"): {"company_name_present"}}),
        Case("company_name_too_long", companies=[company("CO-LONG", company_name="N" * 101)],
             expected={(K, "CO-LONG"): {"company_name_length"}}),
        Case("control_char_in_company_name", companies=[company("CO-ESC", company_name="Fleet\x1bServices")],
             expected={(K, "CO-ESC"): {"company_name_valid"}}),
        Case("company_missing_hierarchy", companies=[company("CO-NOH", hierarchy_code=None)],
             expected={(K, "CO-NOH"): {"hierarchy_code_present"}}),
        Case("duplicate_company_key", companies=[company("CO-DUP"), company("CO-DUP", company_name="Other")],
             expected={(K, "CO-DUP"): {"company_key_unique"}}, db="none"),
        Case("unknown_parent_company", companies=[company("CO-ORPHAN", parent_company_external_id="CO-GHOST")],
             expected={(K, "CO-ORPHAN"): {"parent_company_exists"}}),
        Case("company_parent_cycle",
             companies=[company("CO-CYC1", parent_company_external_id="CO-CYC2"),
                        company("CO-CYC2", parent_company_external_id="CO-CYC1")],
             expected={(K, "CO-CYC1"): {"company_parent_cycle"}, (K, "CO-CYC2"): {"company_parent_cycle"}}),
        Case("company_updated_at_garbage", companies=[company("CO-UPD", updated_at="yesterday")],
             expected={(K, "CO-UPD"): {"company_updated_at_parseable"}}, db="text_ts"),
        Case("company_extended_fields_not_object", companies=[company("CO-JSON", extended_fields='"plain"')],
             expected={(K, "CO-JSON"): {"company_extended_fields_json"}}),
    ]


def _frame(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as given (object columns, None for missing); integer columns as Int64 when they all are."""
    frame = pd.DataFrame({c: pd.Series([row.get(c) for row in rows], dtype=object) for c in columns})
    for column in ("program_id", "tier_number", "loyalty_points"):
        if column in frame and all(v is None or isinstance(v, int) for v in frame[column]):
            frame[column] = pd.array(list(frame[column]), dtype="Int64")
    return frame


def _selected(db: str | None) -> list[Case]:
    allowed = {None: {"any", "text_ts", "none"}, "text_ts": {"any", "text_ts"}, "any": {"any"}}[db]
    return [c for c in cases() if c.db in allowed]


def catalogue_frames(*, db: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(companies, customers): the valid warehouse plus every case's rows.

    ``db="any"`` keeps the cases any typed warehouse can store, ``db="text_ts"`` those a
    warehouse with text timestamp columns can store, None all of them.
    """
    selected = _selected(db)
    companies = valid_companies() + [row for c in selected for row in c.companies]
    customers = valid_customers() + [row for c in selected for row in c.customers]
    return _frame(companies, tables.COMPANY_COLUMNS), _frame(customers, tables.CUSTOMER_COLUMNS)


def expected_quarantine(*, db: str | None = None) -> dict[tuple[str, str], set[str]]:
    """{(entity, key): checks} for the catalogue (same ``db`` selection as catalogue_frames)."""
    out: dict[tuple[str, str], set[str]] = {}
    for case in _selected(db):
        out.update(case.expected)
    return out


def quarantined(result) -> dict[tuple[str, str], set[str]]:
    """{(entity, key): checks} of a result, rows without a key named as the catalogue names them."""
    out: dict[tuple[str, str], set[str]] = {}
    for row in result.quarantine.itertuples(index=False):
        key = re.sub(r"\(row \d+\)", MISSING_KEY, row.entity_key)
        out.setdefault((row.entity, key), set()).add(row.check)
    return out


def validated_customers(rows: list[dict]) -> pd.DataFrame:
    """Customer rows as validation hands them over (``tables.CUSTOMER_COLUMNS``): timestamps
    tz-aware UTC, nullable integers, defaults for loyalty type, source and registration date."""
    full = [{**{c: None for c in tables.CUSTOMER_COLUMNS}, "loyalty_type": "loyalty", "source": "INSTORE",
             "registered_at": "2020-05-01T10:00:00Z", **row} for row in rows]
    frame = pd.DataFrame(full, columns=list(tables.CUSTOMER_COLUMNS)).astype(object)
    for column in ("tier_expiry_date", "points_expiry_date", "registered_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    for column in ("program_id", "tier_number", "loyalty_points"):
        frame[column] = frame[column].astype("Int64")
    return frame
