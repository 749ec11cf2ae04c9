"""Default phone region: formatted and national mobiles pass validation and are sent as E.164 digits."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import validation_cases as vc

from associate import payload, tables, validation
from associate.capillary.settings import ClientSettings, phone_region_of
from associate.exceptions import ConfigurationError

SPELLINGS = {"P-PLUS": "+91 98765-43210", "P-NATIONAL": "98765 43215", "P-TRUNK": "(0) 98765 43211",
             "P-IDD": "0091 98765 43212", "P-E164": "919876543213", "P-FOREIGN": "+44 7911 123457"}


def _run(mobiles: dict[str, str], region: str | None):
    """One customer per mobile (no company: nothing else to check), validated with ``region``."""
    rows = [vc.customer(key, mobile=mobile, company_external_id=None, role_code=None, parent_customer_key=None)
            for key, mobile in mobiles.items()]
    customers = vc._frame(rows, tables.CUSTOMER_COLUMNS)
    companies = vc._frame(vc.valid_companies(), tables.COMPANY_COLUMNS)
    return validation.validate(customers, companies, vc.hierarchies(), run_id="manual__phones", now=vc.NOW,
                               phone_region=region)


def _reasons(result, key: str) -> dict[str, str]:
    rows = result.quarantine[result.quarantine["entity_key"] == key]
    return dict(zip(rows["check"], rows["reason"]))


def _sent_mobile(built: pd.DataFrame, key: str) -> str | None:
    profile = json.loads(built.set_index("entity_key").loc[key, "payload"])["profiles"][0]
    return next((i["value"] for i in profile["identifiers"] if i["type"] == "mobile"), None)


def test_with_a_region_every_spelling_passes_and_is_sent_as_e164_digits():
    result = _run(SPELLINGS, "IN")
    assert not set(SPELLINGS) & set(result.quarantine["entity_key"]), result.quarantine
    expected = {"P-PLUS": "919876543210", "P-NATIONAL": "919876543215", "P-TRUNK": "919876543211",
                "P-IDD": "919876543212", "P-E164": "919876543213", "P-FOREIGN": "447911123457"}
    # Validation hands the rows over with E.164 digits, and the payload sends exactly those.
    assert result.customers.set_index("customer_key")["mobile"][list(expected)].to_dict() == expected
    built = payload.build_elements(result.customers, result.companies)
    assert {key: _sent_mobile(built, key) for key in expected} == expected


def test_two_spellings_of_one_number_are_duplicates():
    result = _run({"P-A": "+91 98765-43210", "P-B": "98765 43210"}, "IN")
    assert "also used by customer P-B" in _reasons(result, "P-A")["mobile_unique"]


def test_reformatting_a_number_does_not_change_the_payload_hash():
    hashes = set()
    for spelling in ("919876543210", "+91 98765-43210", "98765 43210", "+91 (0) 98765 43210"):
        result = _run({"P-SAME": spelling}, "IN")
        built = payload.build_elements(result.customers, result.companies).set_index("entity_key")
        hashes.add(built.loc["P-SAME", "payload_hash"])
    assert len(hashes) == 1


def test_invalid_numbers_are_quarantined_naming_the_region_read_with():
    result = _run({"P-SHORT": "98765 4321", "P-LETTERS": "98765-ABCDE"}, "IN")
    assert _reasons(result, "P-SHORT")["mobile_valid"] == (
        "mobile 98***4321 is not a valid number for region IN (read with default region IN)")
    assert "mobile_valid" in _reasons(result, "P-LETTERS")


def test_without_a_region_national_numbers_are_quarantined_as_before():
    result = _run({"P-NATIONAL": "98765 43210", "P-PLUS": "+91 98765-43214"}, None)
    reason = _reasons(result, "P-NATIONAL")["mobile_valid"]
    assert reason.startswith("mobile 98****3210 is not a valid number")
    assert reason.endswith("(read as international: no default phone region is set)")
    assert "P-PLUS" in set(result.customers["customer_key"])  # formatted, with its country code


def test_a_number_valid_in_two_countries_is_held_back_not_guessed():
    result = _run({"P-AMBIGUOUS": "6591234567", "P-SETTLED": "0 6591234567"}, "IN")
    reasons = _reasons(result, "P-AMBIGUOUS")
    assert set(reasons) == {"mobile_unambiguous"}
    assert reasons["mobile_unambiguous"].startswith(
        "mobile 65****4567 is a valid number of SG (+65) and IN (+91): write it with '+' and its country code")
    assert result.customers.set_index("customer_key").loc["P-SETTLED", "mobile"] == "916591234567"


class _Conn:
    host, schema, port, login, password = "http://x", None, None, "till", "pw"

    def __init__(self, **extra):
        self.extra_dejson = extra


def test_default_phone_region_is_a_connection_extra():
    assert ClientSettings.from_connection(_Conn()).default_phone_region is None
    assert ClientSettings.from_connection(_Conn(default_phone_region="in")).default_phone_region == "IN"
    with pytest.raises(ConfigurationError, match="'default_phone_region': 'India' is not a phone region"):
        ClientSettings.from_connection(_Conn(default_phone_region="India"))


def test_the_param_is_checked_the_same_way():
    assert phone_region_of("", "DAG param 'phone_region'") is None
    assert phone_region_of(None, "DAG param 'phone_region'") is None
    with pytest.raises(ConfigurationError, match="DAG param 'phone_region': 'XX' is not a phone region"):
        phone_region_of("XX", "DAG param 'phone_region'")
