"""associate.reconcile: outcome rows -> results, warnings and state rows."""

from __future__ import annotations

import json

import pandas as pd

from associate import reconcile, staging, tables


def outcome(key, status, capillary_id=None, *, entity="customer", code=None, message=None, hash_="h",
            warnings=(), at="2026-01-01T00:05:00Z", attempts=1, **extra):
    return {"entity": entity, "entity_key": key, "status": status, "capillary_id": capillary_id,
            "error_code": code, "error_message": message, "attempts": attempts,
            "synced_at": pd.Timestamp(at), "payload_hash": hash_,
            "warnings": json.dumps([{"code": c, "message": m} for c, m in warnings]), **extra}


def frame(rows):
    df = pd.DataFrame(rows)
    df["capillary_id"] = df["capillary_id"].astype("Int64")
    df["error_code"] = df["error_code"].astype("Int64")
    return df


BATCH_1 = frame([
    outcome("a", "success", 101),
    outcome("b", "warning", 102, warnings=[(8056, "Invalid mobile"), (91015, "Failed to update extended fields")]),
    outcome("c", "failed", code=1032, message="mobile 919876544424 already used", attempts=3),
])
BATCH_2 = frame([
    # b again as a child of another element: no payload hash, must not override b's own row
    outcome("b", "success", 102, hash_=None, at="2026-01-01T00:09:00Z"),
    outcome("C1", "success", 7, entity="company", hash_="hc"),
])


def test_results_one_row_per_entity_with_masked_errors():
    results, warnings = reconcile.results_from_outcomes([BATCH_1, BATCH_2], "run-1")
    assert list(results.columns) == list(tables.OUTPUT_TABLES[tables.RESULTS_TABLE])
    by_key = results.set_index("entity_key")
    assert sorted(by_key.index) == ["C1", "a", "b", "c"]
    assert (results.run_id == "run-1").all()
    assert by_key.loc["b", "status"] == "warning"  # its own element's outcome wins
    assert by_key.loc["c", "status"] == "failed" and by_key.loc["c", "error_code"] == 1032
    assert pd.isna(by_key.loc["c", "capillary_id"]) and by_key.loc["c", "attempts"] == 3
    assert "919876544424" not in by_key.loc["c", "error_message"]
    assert "4424" in by_key.loc["c", "error_message"]
    assert by_key.loc["C1", "entity"] == "company" and by_key.loc["C1", "capillary_id"] == 7
    assert str(results.capillary_id.dtype) == "Int64"

    assert list(warnings.columns) == list(tables.OUTPUT_TABLES[tables.WARNINGS_TABLE])
    assert sorted(zip(warnings.entity_key, warnings.code)) == [("b", 8056), ("b", 91015)]
    assert (warnings.capillary_id == 102).all() and (warnings.run_id == "run-1").all()


def test_state_rows_carry_status_hash_and_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path))
    uri = staging.write_frame(BATCH_1, staging.run_path("run-1", "outcomes", "chunk-0000.parquet"))
    state = reconcile.state_from_outcomes([uri, BATCH_2], "run-1")  # staged URIs work too
    assert list(state.columns) == list(tables.OUTPUT_TABLES[tables.STATE_TABLE])
    by_key = state.set_index("entity_key")
    assert by_key.loc["a", "payload_hash"] == "h" and by_key.loc["a", "last_status"] == "success"
    assert by_key.loc["b", "last_status"] == "warning"
    assert by_key.loc["c", "last_status"] == "failed" and pd.isna(by_key.loc["c", "capillary_id"])
    assert (state.last_run_id == "run-1").all()
    assert by_key.loc["a", "last_synced_at"] == pd.Timestamp("2026-01-01T00:05:00Z")


def test_no_outcomes_give_empty_tables():
    results, warnings = reconcile.results_from_outcomes([], "run-1")
    assert results.empty and warnings.empty
    assert reconcile.state_from_outcomes(pd.DataFrame(), "run-1").empty


def test_state_keeps_the_association_of_a_successful_send():
    from associate import staged

    sent = staged.outcome_frame([
        staged.outcome_record("customer", "ok", "success", capillary_id=1, payload_hash="h",
                              association={"hierarchy_code": "H", "role_code": "FC", "company_external_id": "ACME"}),
        staged.outcome_record("customer", "no", "failed", error_code=1627, payload_hash="h",
                              association={"hierarchy_code": "H", "role_code": "FA", "company_external_id": "ACME"}),
    ])
    state = reconcile.state_from_outcomes(sent, "run-1").set_index("entity_key")
    assert state.loc["ok", ["hierarchy_code", "role_code", "company_external_id"]].tolist() == ["H", "FC", "ACME"]
    # Null: the upsert keeps the association stored by the last successful send.
    assert state.loc["no", ["hierarchy_code", "role_code", "company_external_id"]].isna().all()


def test_held_back_outcomes_carry_their_code():
    held = reconcile.not_sent_outcomes(["a"], ["role change FC -> FA is not allowed"], codes=[1627])
    results, _ = reconcile.results_from_outcomes(held, "run-1")
    assert results.loc[0, "error_code"] == 1627 and results.loc[0, "status"] == "failed"
    assert results.loc[0, "error_message"].startswith("role change FC -> FA")


def test_one_outcome_per_entity_and_key_the_sent_row_over_the_held_back_one():
    held = outcome("a", "failed", message="not sent: parent p failed in this run", hash_=None, attempts=0,
                   at="2026-01-01T00:09:00Z")
    sent = outcome("a", "success", 101)
    company = outcome("a", "success", 7, entity="company")  # a company with the same key is another entity
    combined = reconcile.combine_outcomes([frame([held, company]), frame([sent])]).set_index(["entity", "entity_key"])
    assert len(combined) == 2
    assert combined.loc[("customer", "a"), "status"] == "success"
    assert combined.loc[("company", "a"), "capillary_id"] == 7
    # Keys shared across entities only: every row is kept as it is.
    assert len(reconcile.combine_outcomes(frame([sent, company]))) == 2


def test_write_back_reads_only_the_keys_of_chunks_recorded_whole(tmp_path):
    from associate import staged, staging
    from associate.reconcile import not_sent_outcomes, with_recorded_chunk_keys

    def chunk(name: str, keys: list[str], recorded: list[bool] | None) -> str:
        frame = staged.outcome_frame(staged.outcome_record("customer", key, "success") for key in keys)
        if recorded is not None:
            frame[staged.RECORDED] = recorded
        return staging.write_frame(frame, "file://" + str(tmp_path / f"{name}.parquet"))

    held = not_sent_outcomes(["H1"], ["held back"])
    whole = [chunk("a", ["A1", "A2"], [True, True]), chunk("b", ["B1"], [True])]
    out = with_recorded_chunk_keys([held], whole)
    assert sorted(out["entity_key"]) == ["A1", "A2", "B1", "H1"]
    assert out.set_index("entity_key").loc["H1", "error_message"] == "held back"  # the others whole
    assert set(out.columns) >= set(staged.OUTCOMES.columns)
    # Anything else: None, and write_back reads every chunk whole.
    assert with_recorded_chunk_keys([held], [*whole, chunk("c", ["C1"], [False])]) is None  # a row not recorded
    assert with_recorded_chunk_keys([held], [*whole, chunk("d", ["D1"], None)]) is None  # no flag (older post)
    assert with_recorded_chunk_keys([not_sent_outcomes(["A1"], ["held"])], whole) is None  # held back and sent
    assert with_recorded_chunk_keys([held], [*whole, chunk("e", ["A1"], [True])]) is None  # sent twice
    assert with_recorded_chunk_keys([held], []) is None
