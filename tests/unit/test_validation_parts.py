"""Parts of the quality gate: libphonenumber / email-validator fast paths are exact, and graph helpers."""

from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import phonenumbers
import pytest
import validation_cases as vc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from associate import identifiers, validation
from associate.validation import emails, graph, phones


def _phone_sample(seed: int = 3, mutations: int = 6) -> list[str]:
    """Example numbers of every region and type, plus single-digit edits and length changes."""
    rng = random.Random(seed)
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
                     phonenumbers.PhoneNumberType.TOLL_FREE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
            out.append(digits)
            for _ in range(mutations):
                chars = list(digits)
                chars[rng.randrange(len(chars))] = str(rng.randrange(10))
                edited = "".join(chars)
                out.append(rng.choice([edited, edited[:-1], edited + str(rng.randrange(10))]))
    return out


def test_mobile_fast_path_agrees_with_libphonenumber_everywhere():
    sample = _phone_sample() + ["0091", "1", "999", "10000000000", "8001234567", "4930123456"]
    got = phones.mobile_validity(pd.Series(sample, dtype=object))
    expected = [phones.library_is_valid(d) for d in sample]
    mismatches = [d for d, g, e in zip(sample, got["valid"], expected) if bool(g) != e]
    assert not mismatches
    assert 0.2 < np.mean(expected) < 0.8  # the sample holds both kinds


def test_mobile_validity_normalises_and_names_the_region():
    got = phones.mobile_validity(pd.Series(["+919876544424", " 919876544424 ", "91 98765 44424", None, "",
                                            "447911123456", "4479", "98765 44424"], dtype=object))
    assert list(got["valid"].astype(object).where(got["valid"].notna(), None)) == [
        True, True, True, None, None, True, False, False]
    assert got["norm"][0] == got["norm"][1] == got["norm"][2] == "919876544424"
    assert got["region"][6] == "GB"
    assert got["norm"][7] == "9876544424"  # national, and no region to read it with: +98 (IR), invalid


def test_mobile_validity_reads_national_numbers_with_the_region():
    values = pd.Series(["98765 44424", "(0) 98765-44424", "+447911123456", "6591234567", "98765", None], dtype=object)
    got = phones.mobile_validity(values, "IN")
    assert list(got["norm"][:3]) == ["919876544424", "919876544424", "447911123456"]
    assert list(got["valid"].astype(object).where(got["valid"].notna(), None)) == [True, True, True, None, False, None]
    assert got["ambiguous"][3] == "SG (+65) and IN (+91)"
    assert got["norm"][4] == "9198765" and got["region"][4] == "IN"


@pytest.mark.parametrize("region", [None, "US"])
def test_vectorised_reading_is_the_scalar_one_everywhere(region):
    # Numbers of every region, as E.164 digits, with '+', and written nationally.
    sample = _phone_sample(mutations=1)
    written = sample + ["+" + d for d in sample[::4]] + [_national(d) for d in sample[::4]]
    got = phones.mobile_validity(pd.Series(written, dtype=object), region)
    expected = [identifiers.read_mobile(v, region) for v in written]
    assert list(got["norm"]) == [r.digits for r in expected]
    readable = [i for i, r in enumerate(expected) if r.digits is not None]
    assert [bool(got["valid"][i]) for i in readable] == [phones.library_is_valid(expected[i].digits) for i in readable]


def _national(digits: str) -> str:
    number = phonenumbers.parse("+" + digits, None)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


_EMAILISH = re.compile(r"[A-Za-z0-9_.+\-]{1,70}@[A-Za-z0-9.\-]{1,70}\.[A-Za-z]{1,8}")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.from_regex(_EMAILISH, fullmatch=True))
def test_email_fast_path_only_accepts_what_email_validator_accepts(address):
    if re.fullmatch(emails._FAST_RE, address):
        assert emails.library_is_valid(address), address


def test_email_validity_uses_the_library_beyond_the_fast_path():
    got = emails.email_validity(pd.Series(["Zoë@exämple.de", "a@b.local", "a..b@x.com", "x@Y.COM", None],
                                          dtype=object))
    assert list(got["valid"][:4]) == [True, False, False, True]
    assert got["norm"][3] == "x@y.com" and got["norm"][4] is None


def test_cycles_and_descendants():
    # 0 <- 1 <- 2; 3 <-> 4 (cycle) <- 5; 6 self-parent; 7 no parent.
    parent = np.array([-1, 0, 1, 4, 3, 4, 6, -1])
    assert list(np.flatnonzero(graph.on_cycle(parent))) == [3, 4, 6]
    seeds = np.zeros(8, dtype=bool)
    seeds[0] = True
    reached, root = graph.descendants(parent, seeds)
    assert list(np.flatnonzero(reached)) == [1, 2] and root[2] == 0
    assert graph.depths(parent).tolist() == [0, 1, 2, -1, -1, -1, -1, 0]
    assert graph.parent_positions(pd.Series(["a", "b", "a"]), pd.Series([None, "a", "zz"])).tolist() == [-1, 0, -1]


def test_values_of_any_type_are_judged_not_crashed_on():
    companies = pd.DataFrame(vc.valid_companies())
    rows = vc.valid_customers() + [
        vc.customer("ODD1", program_id=7.0, tier_number="2", loyalty_points=np.int64(5),
                    extended_fields={"already": "parsed"}, mobile=919876500999),
        vc.customer("ODD2", registered_at=12345, custom_fields=42),
    ]
    result = validation.validate(pd.DataFrame(rows), companies, vc.hierarchies(), run_id="r", now=vc.NOW)
    got = {(r.entity_key, r.check) for r in result.quarantine.itertuples()}
    assert got == {("ODD2", "registered_at_parseable"), ("ODD2", "custom_fields_json")}
    odd = result.customers.set_index("customer_key").loc["ODD1"]
    assert (odd["program_id"], odd["tier_number"], odd["loyalty_points"]) == (7, 2, 5)


