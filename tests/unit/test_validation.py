"""The quality gate on the bad-row catalogue: every kind of bad row quarantined with its check, valid rows pass."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import validation_cases as vc

from associate import tables, validation
from associate.exceptions import QuarantineGateError
from associate.validation import check_gate, format_summary
from conftest import ROOT

ALL_CASES = vc.cases()


@pytest.fixture(scope="module")
def catalogue():
    companies, customers = vc.catalogue_frames()
    result = validation.validate(customers, companies, vc.hierarchies(), run_id="manual__catalogue",
                                 now=vc.NOW)
    return companies, customers, result


def test_catalogue_covers_at_least_25_kinds_and_every_suite_check(catalogue):
    checks = {c for case in ALL_CASES for checks in case.expected.values() for c in checks}
    assert len(ALL_CASES) >= 25
    suite_checks = set()
    for name in ("customers", "companies"):
        data = json.loads((ROOT / "expectations" / f"{name}.json").read_text())
        suite_checks |= {e["meta"]["check"] for e in data["expectations"]}
    untested = suite_checks - checks
    # Length limits of the remaining text columns work like first_name_length (tested).
    assert untested <= {
        "customer_key_length", "last_name_length", "card_number_length", "card_series_code_length",
        "card_status_label_length", "role_code_length", "till_code_length", "account_id_length",
        "company_key_length", "last_name_valid", "card_number_valid",
        "mobile_unambiguous",  # needs a default phone region: tests/unit/test_phone_region.py
    }, untested


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.name for c in ALL_CASES])
def test_bad_row_kind_is_quarantined_with_its_check(catalogue, case):
    _, _, result = catalogue
    got = vc.quarantined(result)
    for key, checks in case.expected.items():
        assert got.get(key) == checks, f"{key}: got {got.get(key)}, expected {checks}"
    for (entity, key, check), fragment in case.reason_contains.items():
        reasons = result.quarantine.query("entity == @entity and entity_key == @key and check == @check")["reason"]
        assert any(fragment in r for r in reasons), list(reasons)
    valid_keys = set(result.customers["customer_key"]) | set(result.companies["company_external_id"])
    assert not {key for _, key in case.expected} & valid_keys


def test_exactly_the_catalogue_rows_are_quarantined_and_every_valid_row_passes(catalogue):
    companies, customers, result = catalogue
    assert vc.quarantined(result) == vc.expected_quarantine()
    held = {key for _, key in vc.expected_quarantine()}
    assert {row["customer_key"] for row in vc.valid_customers()}.isdisjoint(held)
    assert {row["company_external_id"] for row in vc.valid_companies()}.isdisjoint(held)
    # Every row not in the catalogue's expectations passes, e.g. the FA above too many children.
    assert set(result.customers["customer_key"]) == set(customers["customer_key"].dropna()) - held
    assert set(result.companies["company_external_id"]) == set(companies["company_external_id"].dropna()) - held
    assert "B-MAXFA" in set(result.customers["customer_key"])
    # Duplicated keys: every row sharing the key is quarantined, none is silently picked.
    assert (result.quarantine["entity_key"] == "B-DUPK").sum() == 2
    assert (result.quarantine["entity_key"] == "CO-DUP").sum() == 2


def test_reasons_never_show_a_raw_mobile_or_email(catalogue):
    _, customers, result = catalogue
    text = "\n".join(result.quarantine["reason"])
    for value in pd.concat([customers["mobile"], customers["email"]]).dropna():
        raw = str(value)
        assert raw not in text and raw.lstrip("+") not in text, raw
    assert "mobile 91**3456 is not a valid number for region IN" in text


def test_quarantine_frame_follows_the_output_table_contract(catalogue):
    _, _, result = catalogue
    q = result.quarantine
    assert tuple(q.columns) == tables.OUTPUT_TABLES[tables.QUARANTINE_TABLE]
    assert set(q["run_id"]) == {"manual__catalogue"}
    assert set(q["entity"]) == {"customer", "company"}
    assert q["quarantined_at"].iloc[0] == pd.Timestamp(vc.NOW)
    assert q["reason"].str.len().min() > 10
    # One row per (input row, failed check): only rows sharing a duplicated key repeat a pair.
    repeated = q.loc[q.duplicated(["entity", "entity_key", "check"], keep=False), "entity_key"]
    assert set(repeated) == {"B-DUPK", "CO-DUP"}


def test_valid_frames_have_parsed_types_and_keep_the_input_index(catalogue):
    _, customers, result = catalogue
    valid = result.customers
    assert tuple(valid.columns) == tables.CUSTOMER_COLUMNS
    for column in ("registered_at", "tier_expiry_date", "points_expiry_date", "updated_at"):
        assert isinstance(valid[column].dtype, pd.DatetimeTZDtype) and str(valid[column].dt.tz) == "UTC"
    for column in ("program_id", "tier_number", "loyalty_points"):
        assert str(valid[column].dtype) == "Int64"
    by_key = valid.set_index("customer_key")
    assert by_key.at["FC3", "last_viewed_date"] == dt.date(2025, 12, 24)
    assert by_key.at["FC2", "last_viewed_date"] == dt.date(2026, 1, 10)
    assert by_key.at["FC2", "tier_number"] == 1
    # +05:30 offset converted to UTC; a naive datetime is taken as UTC.
    assert by_key.at["GFA1", "registered_at"] == pd.Timestamp("2024-03-01T04:30:00Z")
    assert by_key.at["FC1", "registered_at"] == pd.Timestamp("2023-05-01T09:30:00Z")
    assert by_key.at["GFA1", "first_name"] == "अनिल"
    assert (customers.loc[valid.index, "customer_key"] == valid["customer_key"]).all()
    assert isinstance(result.companies["updated_at"].dtype, pd.DatetimeTZDtype)


def test_summary_ratio_and_log_table(catalogue):
    companies, customers, result = catalogue
    assert result.summary["rows"].sum() == len(result.quarantine)
    assert list(result.summary.columns) == ["entity", "check", "rows"]
    rejected_rows = len(companies) + len(customers) - len(result.companies) - len(result.customers)
    assert result.rejected_ratio() == pytest.approx(rejected_rows / (len(companies) + len(customers)))
    text = format_summary(result)
    assert "role_matches_parent" in text and f"{rejected_rows} of" in text


def test_gate_raises_with_a_clear_reason_above_the_ratio(catalogue):
    _, _, result = catalogue
    check_gate(result, max_ratio=0.99)
    with pytest.raises(QuarantineGateError, match=r"quarantined, above the allowed 5\.0%.*role_matches_parent"):
        check_gate(result, max_ratio=0.05)




def test_an_optional_push_token_column_is_passed_through_to_the_valid_rows():
    companies, customers = vc.catalogue_frames()
    customers = customers.assign(push_token=[f"fcm-{i}" for i in range(len(customers))])
    result = validation.validate(customers, companies, vc.hierarchies(), run_id="manual__push", now=vc.NOW)
    token_of = dict(zip(customers["customer_key"], customers["push_token"]))
    assert tables.CUSTOMER_PUSH_TOKEN in result.customers.columns
    assert all(token_of[k] == t for k, t in zip(result.customers["customer_key"], result.customers["push_token"]))
