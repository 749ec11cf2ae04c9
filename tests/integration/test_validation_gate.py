"""The whole gate through GX on small inputs: clean and empty input, suite files users edit, Data Docs, child counts."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import validation_cases as vc

from associate import tables, validation
from associate.exceptions import SuiteError
from associate.validation import check_gate, format_summary
from conftest import ROOT


def test_clean_input_passes_the_gate_and_empty_input_is_fine():
    companies = pd.DataFrame(vc.valid_companies())
    customers = pd.DataFrame(vc.valid_customers())
    result = validation.validate(customers, companies, vc.hierarchies(), run_id="r", now=vc.NOW)
    assert result.quarantine.empty and result.rejected_ratio() == 0
    check_gate(result, max_ratio=0.0)
    assert "no row failed" in format_summary(result)
    empty = validation.validate(customers.iloc[:0], companies.iloc[:0], vc.hierarchies(), run_id="r", now=vc.NOW)
    assert empty.quarantine.empty and empty.customers.empty and empty.rejected_ratio() == 0


def test_suite_json_is_the_rule_list_users_edit(tmp_path, monkeypatch):
    suites = tmp_path / "suites"
    shutil.copytree(ROOT / "expectations", suites)
    path = suites / "customers.json"
    data = json.loads(path.read_text())
    allowed = next(e for e in data["expectations"] if e["meta"]["check"] == "source_allowed")
    allowed["kwargs"]["value_set"].append("SMS")
    path.write_text(json.dumps(data))
    monkeypatch.setenv("ASSOCIATE_EXPECTATIONS_DIR", str(suites))
    companies = pd.DataFrame(vc.valid_companies())
    customers = pd.DataFrame(vc.valid_customers() + [vc.customer("SMS1", source="SMS"),
                                                     vc.customer("POS1", source="POS")])
    result = validation.validate(customers, companies, vc.hierarchies(), run_id="r", now=vc.NOW)
    assert vc.quarantined(result) == {("customer", "POS1"): {"source_allowed"}}
    assert "POS is not one of INSTORE" in result.quarantine["reason"].iloc[0] and "SMS" in result.quarantine["reason"].iloc[0]


def test_broken_suite_files_fail_loudly(tmp_path):
    companies = pd.DataFrame(vc.valid_companies())
    customers = pd.DataFrame(vc.valid_customers())
    shutil.copytree(ROOT / "expectations", tmp_path / "s")
    path = tmp_path / "s" / "customers.json"
    data = json.loads(path.read_text())
    data["expectations"][0]["type"] = "expect_column_values_to_be_purple"
    path.write_text(json.dumps(data))
    with pytest.raises(SuiteError, match="not valid GX expectation"):
        validation.validate(customers, companies, vc.hierarchies(), run_id="r", suites_dir=tmp_path / "s")
    del data["expectations"][0]["meta"]["reason"]
    path.write_text(json.dumps(data))
    with pytest.raises(SuiteError, match=r"lacks meta \['reason'\]"):
        validation.validate(customers, companies, vc.hierarchies(), run_id="r", suites_dir=tmp_path / "s")
    with pytest.raises(SuiteError, match="not found"):
        validation.validate(customers, companies, vc.hierarchies(), run_id="r", suites_dir=tmp_path / "nowhere")


def test_data_docs_are_built_when_asked(tmp_path):
    companies = pd.DataFrame(vc.valid_companies())
    customers = pd.DataFrame(vc.valid_customers() + [vc.customer("BADMAIL", email="x@@y")])
    result = validation.validate(customers, companies, vc.hierarchies(), run_id="r", now=vc.NOW,
                                 data_docs_dir=tmp_path / "docs")
    index = tmp_path / "docs" / "index.html"
    assert result.data_docs == str(index) and index.exists()
    assert f"Data Docs: {index}" in format_summary(result)
    # One page per suite (not one per group of columns GX ran separately), under the run's name.
    docs = tmp_path / "docs"
    pages = sorted(p.relative_to(docs).parts[:3] for p in (docs / "validations").rglob("*.html"))
    assert pages == [("validations", "companies", "r"), ("validations", "customers", "r")]
    customers_page = next((docs / "validations" / "customers").rglob("*.html"))
    assert customers_page.name == "customers.html"  # a plain file name: it is a URL segment too
    customers_page = customers_page.read_text()
    expectations = len(json.loads((ROOT / "expectations" / "customers.json").read_text())["expectations"])
    text = re.sub(r"<[^>]+>|\s+", "", customers_page)
    assert f"EvaluatedExpectations{expectations}" in text and "UnsuccessfulExpectations1" in text
    assert "email__valid" in customers_page


def test_incremental_extract_counts_children_it_did_not_read():
    # An incremental extract holds a new child of a full FA (maxChild 2 in CO2) but not
    # the FA's other two children; the warehouse's child_count still trips the limit.
    rows = [vc.customer("I-FA", company_external_id="CO2", role_code="FA", parent_customer_key=None),
            vc.customer("I-FC3", company_external_id="CO2", parent_customer_key="I-FA")]
    customers = pd.DataFrame(rows, columns=list(tables.CUSTOMER_COLUMNS))
    companies = pd.DataFrame(vc.valid_companies(), columns=list(tables.COMPANY_COLUMNS))
    counted = customers.assign(child_count=pd.array([3, 0], dtype="Int64"))
    result = validation.validate(counted, companies, vc.hierarchies(), run_id="manual__incr", now=vc.NOW)
    assert vc.quarantined(result) == {("customer", "I-FC3"): {"parent_max_child"}}
    assert "has 3 children; role FA allows at most 2" in result.quarantine["reason"].iloc[0]
    assert list(result.customers.columns) == list(tables.CUSTOMER_COLUMNS)  # the count is not passed on
    # Without the count (a full extract) the two rows are all there is: within the limit.
    assert validation.validate(customers, companies, vc.hierarchies(), run_id="manual__full",
                               now=vc.NOW).quarantine.empty
