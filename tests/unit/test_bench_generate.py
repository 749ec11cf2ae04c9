"""The sample/benchmark warehouse generator: contract, realism, bad rows, loading, touching."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from associate.tables import COMPANY_COLUMNS, CUSTOMER_COLUMNS
from bench.generate import (
    BAD_KINDS,
    CHILD_ROLE,
    HIERARCHY_CODE,
    generate,
    generate_warehouse,
)
from conftest import ROOT

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
N = 3000


@pytest.fixture(scope="module")
def warehouse():
    """One generated warehouse shared by the read-only tests."""
    return generate(N, seed=5, bad_ratio=0.03, now=NOW)


def _good(warehouse) -> pd.DataFrame:
    """Customers not made bad on purpose."""
    customers = warehouse.customers
    return customers[~customers["customer_key"].isin(warehouse.bad_customers["customer_key"])]


def _valid_mobile(value) -> bool:
    """libphonenumber's verdict on an E.164 digit string (with or without '+')."""
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse("+" + str(value).lstrip("+")))
    except phonenumbers.NumberParseException:
        return False


def _valid_email(value) -> bool:
    try:
        validate_email(value, check_deliverability=False)
        return True
    except EmailNotValidError:
        return False


def _json_object(value) -> bool:
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False


def test_same_seed_same_warehouse_other_seed_other_warehouse():
    companies_a, customers_a = generate_warehouse(800, seed=1, now=NOW)
    companies_b, customers_b = generate_warehouse(800, seed=1, now=NOW)
    _, customers_c = generate_warehouse(800, seed=2, now=NOW)
    pd.testing.assert_frame_equal(companies_a, companies_b)
    pd.testing.assert_frame_equal(customers_a, customers_b)
    assert not customers_a["first_name"].equals(customers_c["first_name"])


def test_the_day_moves_dates_only():
    """Tests and benchmarks generate with today's date: their counts must not change with it."""
    dates = ["registered_at", "updated_at", "last_viewed_date", "tier_expiry_date", "points_expiry_date"]
    today = generate(800, seed=1, now=NOW)
    later = generate(800, seed=1, now=datetime(2031, 3, 2, tzinfo=timezone.utc))
    pd.testing.assert_frame_equal(today.customers.drop(columns=dates), later.customers.drop(columns=dates))
    pd.testing.assert_frame_equal(today.companies.drop(columns="updated_at"), later.companies.drop(columns="updated_at"))
    pd.testing.assert_frame_equal(today.bad_customers, later.bad_customers)
    pd.testing.assert_frame_equal(today.bad_companies, later.bad_companies)


def test_columns_and_types_follow_the_warehouse_contract(warehouse):
    assert tuple(warehouse.companies.columns) == COMPANY_COLUMNS
    assert tuple(warehouse.customers.columns) == CUSTOMER_COLUMNS
    assert len(warehouse.customers) == N
    assert warehouse.customers["customer_key"].is_unique
    assert warehouse.companies["company_external_id"].is_unique
    for column in ("registered_at", "updated_at", "tier_expiry_date", "points_expiry_date"):
        assert str(warehouse.customers[column].dt.tz) == "UTC", column
    assert str(warehouse.companies["updated_at"].dt.tz) == "UTC"
    for column in ("program_id", "tier_number", "loyalty_points"):
        assert str(warehouse.customers[column].dtype) == "Int64"


def test_bad_rows_are_the_requested_fraction_and_varied(warehouse):
    bad = warehouse.bad_customers
    assert len(bad) == round(N * 0.03)
    assert bad["customer_key"].is_unique
    assert set(bad["kind"]) == set(BAD_KINDS)
    _, clean = generate_warehouse(500, seed=5, bad_ratio=0.0, now=NOW)
    assert len(generate(500, seed=5, bad_ratio=0.0, now=NOW).bad_customers) == 0
    assert len(clean) == 500


def test_every_bad_row_really_breaks_its_rule(warehouse):
    customers = warehouse.customers.set_index("customer_key", drop=False)
    companies = set(warehouse.companies["company_external_id"])
    counts = {column: customers[column].value_counts() for column in ("mobile", "email")}
    checks = {
        "invalid_mobile": lambda row: not _valid_mobile(row.mobile),
        "malformed_email": lambda row: not _valid_email(row.email),
        "duplicate_mobile": lambda row: counts["mobile"][row.mobile] >= 2,
        "duplicate_email": lambda row: counts["email"][row.email] >= 2,
        "no_identifier": lambda row: pd.isna(row.mobile) and pd.isna(row.email) and pd.isna(row.external_id),
        "future_registered_at": lambda row: row.registered_at > NOW,
        "registered_before_1990": lambda row: row.registered_at.year < 1990,
        "expiry_before_registration": lambda row: row.tier_expiry_date < row.registered_at,
        "future_last_viewed_date": lambda row: row.last_viewed_date > NOW.date(),
        "unknown_company": lambda row: row.company_external_id not in companies,
        "parent_in_other_company": lambda row: (
            customers.loc[row.parent_customer_key, "company_external_id"] != row.company_external_id),
        "wrong_parent_role": lambda row: (
            CHILD_ROLE[customers.loc[row.parent_customer_key, "role_code"]] != row.role_code),
        "unknown_parent": lambda row: row.parent_customer_key not in customers.index,
        "unknown_role": lambda row: row.role_code not in CHILD_ROLE,
        "partial_card": lambda row: pd.notna(row.card_number) and pd.isna(row.card_series_code),
        "bad_loyalty_type": lambda row: row.loyalty_type not in ("loyalty", "non_loyalty"),
        "bad_source": lambda row: row.source not in ("INSTORE", "ECOMMERCE"),
        "extended_fields_array": lambda row: isinstance(json.loads(row.extended_fields), list),
        "custom_fields_not_json": lambda row: not _json_object(row.custom_fields),
        "tier_number_zero": lambda row: row.tier_number == 0,
    }
    assert set(checks) == set(BAD_KINDS)
    for key, kind in warehouse.bad_customers.itertuples(index=False):
        assert checks[kind](customers.loc[key]), f"{key} was meant to be {kind}"


def test_good_rows_pass_the_identifier_date_and_enum_rules(warehouse):
    good = _good(warehouse)
    mobiles = good["mobile"].dropna()
    assert mobiles.map(_valid_mobile).all()
    assert mobiles.str.lstrip("+").str[:2].nunique() >= 5  # several countries
    assert good["email"].dropna().map(_valid_email).all()
    for column in ("email", "external_id", "card_number"):
        assert good[column].dropna().is_unique, column
    assert mobiles.str.lstrip("+").is_unique
    assert (good[["mobile", "email", "external_id"]].notna().any(axis=1)).all()
    carded = good[["card_number", "card_series_code", "card_status_label"]].notna()
    assert (carded.all(axis=1) | ~carded.any(axis=1)).all()
    assert ((good["registered_at"] > pd.Timestamp("1990-01-01", tz="UTC")) & (good["registered_at"] < NOW)).all()
    assert (good["updated_at"] >= good["registered_at"]).all()
    enrolled = good[good["program_id"].notna()]
    assert len(enrolled) > 0
    assert (enrolled["tier_expiry_date"] > enrolled["registered_at"]).all()
    assert (enrolled["points_expiry_date"] > enrolled["registered_at"]).all()
    assert (enrolled["tier_number"] >= 1).all()
    assert set(good["loyalty_type"]) == {"loyalty", "non_loyalty"}
    assert good["source"].value_counts().idxmax() == "INSTORE"
    assert good["extended_fields"].dropna().map(_json_object).all()
    assert good["custom_fields"].dropna().map(_json_object).all()
    assert good["till_code"].notna().mean() > 0.5
    viewed = good["last_viewed_date"].dropna()
    assert len(viewed) > 0 and (viewed <= NOW.date()).all()


def test_names_come_in_several_scripts(warehouse):
    names = " ".join(warehouse.customers["first_name"].dropna()) + " ".join(warehouse.companies["company_name"])
    for script, pattern in {
        "Devanagari": r"[\u0900-\u097F]", "CJK": r"[\u4E00-\u9FFF]", "Arabic": r"[\u0600-\u06FF]",
        "Cyrillic": r"[\u0400-\u04FF]", "Latin": r"[A-Za-z]",
    }.items():
        assert re.search(pattern, names), script


def test_good_rows_form_consistent_company_trees(warehouse):
    good = _good(warehouse).set_index("customer_key", drop=False)
    companies = warehouse.companies.set_index("company_external_id")
    in_company = good[good["company_external_id"].notna()]
    assert in_company["company_external_id"].isin(companies.index).all()
    assert (companies.loc[in_company["company_external_id"], "hierarchy_code"] == HIERARCHY_CODE).all()
    roots = in_company[in_company["parent_customer_key"].isna()]
    assert set(roots["role_code"]) == {"GFA"}
    children = in_company[in_company["parent_customer_key"].notna()]
    assert children["parent_customer_key"].isin(good.index).all()
    parents = good.loc[children["parent_customer_key"]]
    assert (parents["company_external_id"].to_numpy() == children["company_external_id"].to_numpy()).all()
    expected_roles = parents["role_code"].map(CHILD_ROLE).to_numpy()
    assert (expected_roles == children["role_code"].to_numpy()).all()
    assert (roots.groupby("company_external_id").size() == 1).all()  # one GFA per company
    assert set(children["role_code"]) == {"SFA", "FA", "FC"}
    assert (in_company["role_code"] == "FC").mean() > 0.5  # most customers are fleet customers
    standalone = good[good["company_external_id"].isna()]
    assert len(standalone) > 0 and standalone["parent_customer_key"].isna().all()
    holding = warehouse.companies["parent_company_external_id"].dropna()
    assert len(holding) > 0 and holding.isin(companies.index).all()
    assert companies.loc[holding, "parent_company_external_id"].isna().all()  # one level: no cycles


def test_cli_builds_a_sqlite_warehouse(tmp_path):
    path = tmp_path / "cli.db"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.generate", "--customers", "400", "--seed", "2", "--bad-ratio", "0.05",
         "--sqlite", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 0, completed.stderr
    assert "400 customers (20 bad customers" in completed.stdout
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM customers").fetchone()[0] == 400
        assert connection.execute("SELECT count(*) FROM fleet_companies").fetchone()[0] >= 40
    missing = subprocess.run([sys.executable, "-m", "bench.generate", "--customers", "10"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin"})
    assert missing.returncode == 2 and "--sqlite" in missing.stderr
