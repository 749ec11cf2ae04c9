"""Bad input beyond the quality gate's own catalogue: every kind ends quarantined with a reason or sent correctly.

One warehouse holds a small valid fleet plus one case per kind; the DAG's task functions run
in this process against a real sandbox (tests/reliability_support.run_pipeline), and each
kind is then checked on its own: its quarantine rows, its result row, and what Capillary
holds (through the lookups).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import pytest
import requests

from reliability_support import (  # record: fixture
    AUDITOR, auditor_header, input_frames, lookup_details, pipeline_environment, record, run_pipeline,
    write_input_tables,
)
from validation_cases import company, customer

C, K = "customer", "company"
Check = Callable[[dict], list[str]]


@dataclass
class Kind:
    """One kind of bad input: its rows, and per key the expected outcome."""

    name: str
    customers: list[dict] = field(default_factory=list)
    companies: list[dict] = field(default_factory=list)
    # (entity, key) -> "quarantined:<check>" | "sent"
    expected: dict[tuple[str, str], str] = field(default_factory=dict)
    # key -> checks on Capillary's customer (customerDetails) for rows expected "sent"
    capillary: dict[str, Check] = field(default_factory=dict)


def profile_is(**fields) -> Check:
    """Capillary's first profile has these field values."""
    def check(details: dict) -> list[str]:
        prof = details["profiles"][0]
        return [f"{k} = {prof.get(k)!r}, expected {v!r}" for k, v in fields.items() if prof.get(k) != v]
    return check


def identifiers_are(**expected) -> Check:
    """Capillary holds these identifier values (by type)."""
    def check(details: dict) -> list[str]:
        held = {(i["type"], i["value"]) for i in details["profiles"][0].get("identifiers", [])}
        return [f"identifier {t}={v!r} missing (holds {sorted(held)})" for t, v in expected.items() if (t, v) not in held]
    return check


def extended_is(**fields) -> Check:
    def check(details: dict) -> list[str]:
        ext = details.get("extendedFields") or {}
        return [f"extendedFields.{k} = {ext.get(k)!r}, expected {v!r}" for k, v in fields.items() if ext.get(k) != v]
    return check


def associated(company_id: str, role: str) -> Check:
    def check(details: dict) -> list[str]:
        assoc = details.get("associationDetails") or {}
        got = ((assoc.get("fleetCompany") or {}).get("externalId"), assoc.get("roleCode"))
        return [] if got == (company_id, role) else [f"association {got}, expected {(company_id, role)}"]
    return check


def one(name: str, key: str, outcome: str, *checks: Check, **fields) -> Kind:
    """A kind made of one customer row (an FC under FA1 of CO1 unless ``fields`` say otherwise)."""
    fields.setdefault("external_id", f"EXT-{name}")
    kind = Kind(name, customers=[customer(key, **fields)], expected={(C, key): outcome})
    if checks:
        kind.capillary[key] = lambda d, cs=checks: [p for c in cs for p in c(d)]
    return kind


SQL_NAME = "Robert'); DROP TABLE customers;--"
SQL_KEY = "K'; DELETE FROM associate_sync_state; --"
SQL_COMPANY = "CO'; DROP TABLE fleet_companies;--"


def kinds() -> list[Kind]:
    """The catalogue (keys are unique per kind)."""
    return [
        one("sql_in_first_name", "BI-SQL1", "sent", profile_is(firstName=SQL_NAME), first_name=SQL_NAME),
        one("sql_in_customer_key", SQL_KEY, "sent", profile_is(firstName="Asha"), email="sqlkey@example.com"),
        Kind("sql_in_company_id", companies=[company(SQL_COMPANY)],
             customers=[customer("BI-SQLCO", company_external_id=SQL_COMPANY, role_code="FA",
                                 parent_customer_key=None, external_id="EXT-sqlco")],
             expected={(K, SQL_COMPANY): "sent", (C, "BI-SQLCO"): "sent"},
             capillary={"BI-SQLCO": associated(SQL_COMPANY, "FA")}),
        one("sql_in_extended_fields", "BI-SQL2", "sent", extended_is(note="1; DROP TABLE x"),
            extended_fields=json.dumps({"note": "1; DROP TABLE x"})),
        one("nul_byte_in_name", "BI-NUL1", "quarantined:first_name_valid", first_name="Ana\x00Maria"),
        one("nul_byte_in_external_id", "BI-NUL2", "quarantined:external_id_valid", external_id="EXT\x00NUL"),
        one("name_10kb", "BI-LONG1", "quarantined:first_name_length", first_name="N" * 10_240),
        one("last_name_10kb", "BI-LONG2", "quarantined:last_name_length", last_name="ß" * 10_240),
        one("emoji_name", "BI-EMOJI", "sent", profile_is(firstName="🚚 Fleet 👩‍🚀", lastName="Ünal 🇮🇳"),
            first_name="🚚 Fleet 👩‍🚀", last_name="Ünal 🇮🇳"),
        one("rtl_name", "BI-RTL", "sent", profile_is(firstName="מרים", lastName="\u202bمحمد\u202c"),
            first_name="מרים", last_name="\u202bمحمد\u202c"),
        one("cjk_and_combining_marks", "BI-CJK", "sent", profile_is(firstName="王小明", lastName="Zoë Å"),
            first_name="王小明", last_name="Zoë Å"),
        one("newline_and_tab_in_name", "BI-NL", "sent", profile_is(firstName="Line\nBreak\tTab"),
            first_name="Line\nBreak\tTab"),
        one("html_in_name", "BI-HTML", "sent", profile_is(firstName="<script>alert(1)</script>"),
            first_name="<script>alert(1)</script>"),
        one("mobile_stored_as_float", "BI-FLOATM", "sent", identifiers_are(mobile="919876512345"),
            mobile=919876512345.0),
        one("mobile_stored_as_integer", "BI-INTM", "sent", identifiers_are(mobile="919876512346"),
            mobile=919876512346),
        one("program_id_stored_as_float", "BI-FLOATP", "sent", program_id=7.0, tier_number=2.0, loyalty_points=10.0),
        one("points_stored_as_digit_text", "BI-TEXTP", "sent", program_id="7", tier_number="1", loyalty_points="250"),
        one("registered_at_without_time_zone", "BI-NAIVE", "sent",
            profile_is(createDate="2024-03-01T10:00:00+00:00"), registered_at="2024-03-01 10:00:00"),
        one("registered_at_with_offset", "BI-OFFS", "sent",
            profile_is(createDate="2024-03-01T04:30:00+00:00"), registered_at="2024-03-01T10:00:00+05:30"),
        one("registered_at_date_only", "BI-DATE", "sent",
            profile_is(createDate="2024-03-01T00:00:00+00:00"), registered_at="2024-03-01"),
        one("registered_at_microseconds", "BI-MICRO", "sent",
            profile_is(createDate="2024-03-01T10:00:00+00:00"), registered_at="2024-03-01T10:00:00.123456Z"),
        Kind("duplicate_row_in_extract",
             customers=[customer("BI-DUP", external_id="EXT-dup"), customer("BI-DUP", external_id="EXT-dup")],
             expected={(C, "BI-DUP"): "quarantined:customer_key_unique"}),
        Kind("duplicate_key_different_rows",
             customers=[customer("BI-DUP2", external_id="EXT-dup2a"), customer("BI-DUP2", external_id="EXT-dup2b")],
             expected={(C, "BI-DUP2"): "quarantined:customer_key_unique"}),
        Kind("parent_cycle_across_companies", companies=[company("CO-X1"), company("CO-X2")],
             customers=[customer("BI-CYCA", company_external_id="CO-X1", role_code="FA", parent_customer_key="BI-CYCB",
                                 external_id="EXT-cyca"),
                        customer("BI-CYCB", company_external_id="CO-X2", role_code="FA", parent_customer_key="BI-CYCA",
                                 external_id="EXT-cycb")],
             expected={(C, "BI-CYCA"): "quarantined:parent_same_company",
                       (C, "BI-CYCB"): "quarantined:parent_same_company"}),
        Kind("company_with_no_hierarchy", companies=[company("CO-NOHIER", hierarchy_code=None)],
             customers=[customer("BI-NOHIER", company_external_id="CO-NOHIER", role_code="FA",
                                 parent_customer_key=None, external_id="EXT-nohier")],
             expected={(K, "CO-NOHIER"): "quarantined:hierarchy_code_present",
                       (C, "BI-NOHIER"): "quarantined:company_rejected"}),
        one("extended_fields_json_array", "BI-ARR", "quarantined:extended_fields_json", extended_fields="[1, 2, 3]"),
        # Not a scalar: Capillary skips that field with warning 91015 and keeps the customer.
        one("extended_fields_nested_object", "BI-NEST", "warning:91015", lambda d: ["fleet stored"] if "fleet" in (
            d.get("extendedFields") or {}) else [], extended_fields=json.dumps({"fleet": {"size": 3}, "tier": "A"})),
        one("custom_fields_json_null", "BI-JNULL", "quarantined:custom_fields_json", custom_fields="null"),
        one("email_mixed_case_and_spaces", "BI-MAILC", "sent", identifiers_are(email="mixed.case@example.com"),
            email="  Mixed.Case@Example.COM "),
        one("email_with_zero_width_space", "BI-ZWSP", "quarantined:email_valid", email="zero\u200bwidth@example.com"),
        one("email_300_chars", "BI-MAILL", "quarantined:email_valid", email="a" * 290 + "@example.com"),
        # Formatted numbers with their country code are read by libphonenumber and sent as E.164 digits.
        one("mobile_with_spaces_and_dashes", "BI-MOBSEP", "sent", identifiers_are(mobile="919876512347"),
            mobile="+91 98765-12347"),
        one("mobile_fullwidth_digits", "BI-MOBFW", "sent", identifiers_are(mobile="919876512348"),
            mobile="９１９８７６５１２３４８"),
        one("customer_key_unicode", "客户-1", "sent", profile_is(firstName="Asha")),
        one("parent_key_with_trailing_space", "BI-PSPACE", "quarantined:parent_exists", parent_customer_key="FA1 "),
        one("loyalty_type_upper_case", "BI-LTUP", "quarantined:loyalty_type_allowed", loyalty_type="LOYALTY"),
        one("whitespace_only_name", "BI-WS", "sent", first_name="   ", last_name=""),
        one("till_code_sql", "BI-TILL", "sent", profile_is(associatedWith="t'; --"), till_code="t'; --"),
        Kind("company_name_emoji_and_quotes", companies=[company("CO-EMO", company_name="Fleet \"🚚\" O'Brien")],
             customers=[customer("BI-EMOCO", company_external_id="CO-EMO", role_code="FA", parent_customer_key=None,
                                 external_id="EXT-emoco")],
             expected={(K, "CO-EMO"): "sent", (C, "BI-EMOCO"): "sent"},
             capillary={"BI-EMOCO": associated("CO-EMO", "FA")}),
    ]


def base_rows() -> tuple[list[dict], list[dict]]:
    """A valid fleet every kind may hang from: CO1 with GFA1 -> SFA1 -> FA1."""
    companies = [company("CO1")]
    customers = [
        customer("GFA1", role_code="GFA", parent_customer_key=None, external_id="EXT-GFA1"),
        customer("SFA1", role_code="SFA", parent_customer_key="GFA1", external_id="EXT-SFA1"),
        customer("FA1", role_code="FA", parent_customer_key="SFA1", external_id="EXT-FA1"),
    ]
    return companies, customers


@pytest.fixture(scope="module")
def catalogue_run(tmp_path_factory):
    """The whole catalogue through the pipeline once; (run, Capillary details by key)."""
    from associate.sandbox.launcher import SandboxProcess
    from dag_support import TILL

    tmp = tmp_path_factory.mktemp("bad_input")
    companies, customers = base_rows()
    for kind in kinds():
        companies += kind.companies
        customers += kind.customers
    path = tmp / "warehouse.db"
    write_input_tables(path, *input_frames(companies, customers))
    with SandboxProcess(tmp / "sandbox.db", credentials=[TILL, AUDITOR]) as sandbox, \
            pipeline_environment(tmp, sandbox.url, path):
        run = run_pipeline(path, "bad_input_catalogue")
        session = requests.Session()
        session.headers.update(auditor_header())
        details = {key: lookup_details(session, sandbox.url, "externalId", ext)
                   for key, ext in ((r["customer_key"], r["external_id"]) for r in customers)
                   if isinstance(ext, str) and "\x00" not in ext}
        yield run, details, path


def test_catalogue_has_at_least_30_kinds():
    names = [k.name for k in kinds()]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("kind", kinds(), ids=lambda k: k.name)
def test_bad_input_kind(kind, catalogue_run, record):
    run, details, path = catalogue_run
    problems, observed = [], {}
    warnings = run.warnings
    for (entity, key), expected in kind.expected.items():
        checks = run.quarantine.get((entity, key), [])
        result = (run.results if entity == C else run.company_results).get(key)
        observed[f"{entity} {key!r}"] = {
            "quarantined": [f"{c}: {r}" for c, r in checks],
            "result": result[:2] if result else None,
            "error": result[3] if result and result[0] == "failed" else None,
        }
        if expected.startswith("quarantined:"):
            check = expected.split(":", 1)[1]
            if check not in {c for c, _ in checks}:
                problems.append(f"{key!r}: expected quarantine by {check}, got {checks or result}")
            if any(not r for _, r in checks):
                problems.append(f"{key!r}: a quarantine row without a reason")
            if result is not None:
                problems.append(f"{key!r}: quarantined yet sent ({result})")
        else:
            statuses = ("warning",) if expected.startswith("warning:") else ("success", "warning")
            if expected.startswith("warning:") and int(expected.split(":")[1]) not in warnings.get(key, set()):
                problems.append(f"{key!r}: expected Capillary warning {expected}, got {warnings.get(key)}")
            if checks:
                problems.append(f"{key!r}: expected sent, quarantined: {checks}")
            elif result is None or result[0] not in statuses:
                problems.append(f"{key!r}: expected sent, result {result}")
            elif key in kind.capillary:
                held = details.get(key)
                if held is None or held["id"] != result[1]:
                    problems.append(f"{key!r}: Capillary holds {held and held['id']}, result says {result[1]}")
                else:
                    problems += [f"{key!r}: {p}" for p in kind.capillary[key](held)]
    record("bad_input", kind.name, expected={f"{e} {k!r}": v for (e, k), v in kind.expected.items()},
           observed=observed, problems=problems)
    assert not problems, "\n".join(problems)


def test_every_input_row_has_exactly_one_outcome_and_tables_survive(catalogue_run):
    run, _, path = catalogue_run
    import sqlite3

    customers_keys = {r["customer_key"] for k in kinds() for r in k.customers} | {"GFA1", "SFA1", "FA1"}
    quarantined = {k for (e, k) in run.quarantine if e == C}
    sent = set(run.results)
    assert not quarantined & sent
    assert customers_keys == quarantined | sent, f"rows with no outcome: {customers_keys - quarantined - sent}"
    with sqlite3.connect(path) as db:  # the SQL-looking values were data, never statements
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"customers", "fleet_companies", "associate_sync_state"} <= names
        assert db.execute("SELECT count(*) FROM associate_sync_state").fetchone()[0] >= len(sent)


def test_reliability_md_lists_every_kind():
    """RELIABILITY.md (generated by scripts/reliability_report.py) is regenerated when a kind is added."""
    from reliability_support import ROOT

    text = (ROOT / "RELIABILITY.md").read_text(encoding="utf-8")
    missing = [k.name for k in kinds() if f"| {k.name} |" not in text]
    assert not missing, f"run scripts/reliability_report.py --run: RELIABILITY.md lacks {missing}"
