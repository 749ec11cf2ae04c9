"""associate.staged: each staged format's columns, dtypes, empty frame and outcome rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from associate import staged


@pytest.mark.parametrize("fmt", [staged.ELEMENTS, staged.TO_SEND, staged.CHUNK, staged.OUTCOMES,
                                 staged.COMPANY_OUTCOMES], ids=lambda f: f.name)
def test_an_empty_frame_has_the_format_columns_and_dtypes(fmt):
    frame = fmt.empty()
    assert frame.empty and list(frame.columns) == list(fmt.columns)
    assert {c: str(t) for c, t in frame.dtypes.items()} == dict(fmt.dtypes)


def test_a_frame_without_a_format_column_is_refused():
    frame = staged.CHUNK.empty().drop(columns="payload_hash")
    with pytest.raises(ValueError, match=r"payload chunk chunk-0 lacks columns \['payload_hash'\]"):
        staged.CHUNK.check(frame, "chunk-0")


def test_outcome_rows_are_typed_masked_and_failed_rows_carry_no_id():
    now = pd.Timestamp("2026-01-01T00:00:00Z")
    ok = staged.outcome_record("customer", 7, "warning", capillary_id=101, attempts=2, synced_at=now,
                               payload_hash="h", warnings=[{"code": 8056, "message": "mobile 919876543210"}])
    bad = staged.outcome_record("customer", "k2", "failed", capillary_id=102, error_code=1032,
                                error_message="used by a.b@example.com", synced_at=now)
    frame = staged.outcome_frame([ok, bad])
    assert {c: str(t) for c, t in frame.dtypes.items()} == dict(staged.OUTCOMES.dtypes)
    assert frame["entity_key"].tolist() == ["7", "k2"]
    assert frame["capillary_id"].tolist() == [101, pd.NA]
    assert frame.loc[1, "error_message"] == "used by a**@example.com" and frame.loc[0, "error_message"] is None
    assert json.loads(frame.loc[0, "warnings"]) == [{"code": 8056, "message": "mobile 91******3210"}]
    assert frame.loc[1, "payload_hash"] is None and frame.loc[1, "warnings"] == "[]"


def test_outcome_rows_framed_from_lists_are_the_frame_typed_outcomes_makes():
    now = pd.Timestamp("2026-01-01T00:00:00Z")
    rows = [staged.outcome_record("customer", f"k{i}", ("success", "warning", "failed")[i % 3],
                                  capillary_id=100 + i, error_code=None if i % 3 else 400,
                                  error_message=None if i % 3 else "refused 919876543210", attempts=i % 2 + 1,
                                  synced_at=now, payload_hash=f"h{i}",
                                  warnings=[{"code": 8058, "message": "odd"}] if i % 3 == 1 else (),
                                  association={"hierarchy_code": "fleet", "role_code": "FC"})
            for i in range(7)]
    # Rows made elsewhere: a NaN id, a text time, columns left out.
    rows.append({"entity": "customer", "entity_key": "loose", "status": "failed", "capillary_id": float("nan"),
                 "attempts": 0, "synced_at": "2026-01-02T03:04:05+00:00"})
    expected = staged.typed_outcomes(pd.DataFrame.from_records(rows, columns=list(staged.OUTCOMES.columns)))
    pd.testing.assert_frame_equal(staged.outcome_frame(rows), expected)
    pd.testing.assert_frame_equal(staged.outcome_frame([]), staged.typed_outcomes(
        pd.DataFrame.from_records([], columns=list(staged.OUTCOMES.columns))))


def test_typed_outcomes_keeps_extra_columns_after_the_format():
    frame = staged.COMPANY_OUTCOMES.empty()
    typed = staged.typed_outcomes(frame.assign(action=pd.Series([], dtype=object)))
    assert list(typed.columns) == list(staged.COMPANY_OUTCOMES.columns)


def test_counts_for_a_log_line():
    assert staged.format_counts(["success", "failed", "success"]) == "1 failed, 2 success"
    assert staged.format_counts([]) == "nothing sent"


def test_association_is_kept_for_a_successful_outcome_only():
    element = {"associationDetails": {"hierarchyCode": "H", "roleCode": "FA", "fleetCompany": {"externalId": "ACME"}}}
    association = staged.element_association(element)
    assert association == {"hierarchy_code": "H", "role_code": "FA", "company_external_id": "ACME"}
    assert staged.element_association({"profiles": []}) == {}
    ok = staged.outcome_record("customer", "a", "success", capillary_id=1, association=association)
    failed = staged.outcome_record("customer", "b", "failed", error_code=1627, association=association)
    assert (ok["hierarchy_code"], ok["role_code"], ok["company_external_id"]) == ("H", "FA", "ACME")
    assert (failed["hierarchy_code"], failed["role_code"], failed["company_external_id"]) == (None, None, None)


def test_staged_formats_carry_method_and_query():
    assert {"method", "source", "account_id"} <= set(staged.CHUNK.columns)
    assert {"method", "change"} <= set(staged.TO_SEND.columns)
    assert staged.BATCH_KEY == ("depth", "method", "source", "account_id")
