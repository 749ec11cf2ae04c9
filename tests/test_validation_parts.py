"""Parts of the quality gate: libphonenumber / email-validator fast paths are exact, graph helpers, and
the catalogue through a real warehouse (SQLite and PostgreSQL) and the extract."""

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

from associate import staging, tables, validation, warehouse
from associate.validation import emails, graph, phones
from associate.warehouse.outputs import read_table
from bench.loaders import load_frames


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
                                            "447911123456", "4479"], dtype=object))
    assert list(got["valid"].astype(object).where(got["valid"].notna(), None)) == [
        True, True, False, None, None, True, False]
    assert got["norm"][0] == got["norm"][1] == "919876544424"
    assert got["region"][2] == phones.UNKNOWN_REGION  # spaces: not E.164 digits
    assert got["region"][6] == "GB"


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


@pytest.mark.parametrize("backend,timestamps_as_text", [("sqlite", True), ("postgres", False)])
def test_catalogue_through_the_warehouse_and_extract(request, backend, timestamps_as_text, tmp_path, monkeypatch):
    conn_id = request.getfixturevalue("sqlite_conn" if backend == "sqlite" else "pg_conn")
    db = "text_ts" if timestamps_as_text else "any"
    companies, customers = vc.catalogue_frames(db=db)
    load_frames(conn_id, companies, customers, timestamps_as_text=timestamps_as_text)
    extracted_customers = warehouse.extract(conn_id, tables.ENTITY_CUSTOMER, mode="full")
    extracted_companies = warehouse.extract(conn_id, tables.ENTITY_COMPANY, mode="full")
    assert len(extracted_customers) == len(customers) and len(extracted_companies) == len(companies)

    # The extract task's Arrow-backed text stages exactly what the object columns stage,
    # odd values (numbers in text columns, JSON, bad dates) included.
    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    for entity, extracted in ((tables.ENTITY_CUSTOMER, extracted_customers),
                              (tables.ENTITY_COMPANY, extracted_companies)):
        arrow = warehouse.extract(conn_id, entity, mode="full", arrow_text=True)
        assert any(str(dtype) == "str" for dtype in arrow.dtypes)
        staged = staging.read_frame(staging.write_frame(arrow, staging.run_path("r", f"{entity}-arrow.parquet")))
        expected = staging.read_frame(staging.write_frame(extracted, staging.run_path("r", f"{entity}.parquet")))
        pd.testing.assert_frame_equal(staged, expected)

    result = validation.validate(extracted_customers, extracted_companies, vc.hierarchies(),
                                 run_id=f"db__{backend}", now=vc.NOW)
    got: dict[tuple[str, str], set[str]] = {}
    for row in result.quarantine.itertuples(index=False):
        got.setdefault((row.entity, row.entity_key), set()).add(row.check)
    assert got == vc.expected_quarantine(db=db)
    held = {key for _, key in got}
    assert set(result.customers["customer_key"]) == set(customers["customer_key"]) - held

    # The quarantine goes back to the same warehouse as the output table.
    warehouse.ensure_output_tables(conn_id)
    warehouse.replace_run_rows(conn_id, tables.QUARANTINE_TABLE, f"db__{backend}", result.quarantine)
    stored = read_table(conn_id, tables.QUARANTINE_TABLE, run_id=f"db__{backend}")
    assert len(stored) == len(result.quarantine)
