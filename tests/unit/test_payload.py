"""associate.payload: element mapping (checked against the pydantic models), hashes, chunks."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from associate import chunking, payload, payload_workers, staged, staging, tables
from associate.models import CustomerElement
from validation_cases import validated_customers


COMPANIES = pd.DataFrame([
    {"company_external_id": "ACME", "company_name": "Acme", "hierarchy_code": "code-association2",
     "parent_company_external_id": None, "extended_fields": None, "updated_at": None},
    {"company_external_id": "BETA", "company_name": "Beta", "hierarchy_code": "code-beta",
     "parent_company_external_id": None, "extended_fields": None, "updated_at": None},
])

ADMIN = {"customer_key": "admin", "first_name": "Asha", "mobile": " +919876544424 ",
         "email": "Asha.Admin@Example.COM", "external_id": "EXT-A", "company_external_id": "ACME",
         "role_code": "FA", "source": "INSTORE", "account_id": "acc-1"}
DRIVER = {
    "customer_key": "driver", "first_name": "राजेश", "last_name": "王", "mobile": "919812345678",
    "email": "Driver@Example.com", "external_id": "EXT-D", "card_number": "CARD-1",
    "card_series_code": "FLEET", "card_status_label": "ACTIVE", "loyalty_type": "loyalty",
    "company_external_id": "ACME", "role_code": "FC", "parent_customer_key": "admin",
    "program_id": 5, "tier_number": 2, "loyalty_points": 150,
    "tier_expiry_date": "2027-03-01T00:00:00+05:30", "points_expiry_date": "2027-06-30T18:30:00Z",
    "registered_at": "2021-02-03T04:05:06+08:00", "last_viewed_date": date(2025, 12, 24),
    "till_code": "till.blr.01", "source": "MOBILE_APP", "account_id": "app-7",
    "extended_fields": '{"vehicle_no": "KA01AB1234", "fleet_size": 12}',
    "custom_fields": '{"preferred_language": "hi"}',
}


def element_of(frame: pd.DataFrame, key: str) -> dict:
    return json.loads(frame.set_index("entity_key").loc[key, "payload"])


def test_every_field_maps_to_the_wire_form_and_validates():
    built = payload.build_elements(validated_customers([ADMIN, DRIVER]), COMPANIES)
    wire = element_of(built, "driver")
    assert wire == {
        "profiles": [{
            "firstName": "राजेश", "lastName": "王",
            "identifiers": [
                {"type": "mobile", "value": "919812345678"},
                {"type": "email", "value": "driver@example.com"},
                {"type": "externalId", "value": "EXT-D"},
                {"type": "cardnumber", "value": "CARD-1", "seriesCode": "FLEET", "statusLabel": "ACTIVE"},
            ],
            "commChannels": [
                {"type": "mobile", "value": "919812345678", "primary": True, "verified": False},
                {"type": "email", "value": "driver@example.com", "primary": True, "verified": False},
            ],
            "fields": {"preferred_language": "hi"},
            "source": "MOBILE_APP", "accountId": "app-7",
            "createDate": "2021-02-02T20:05:06+00:00",
            "associatedWith": "till.blr.01",
        }],
        "loyaltyInfo": {"loyaltyType": "loyalty"},
        "loyaltyProgramEnrollments": [{
            "programId": 5, "tierNumber": 2, "loyaltyPoints": 150,
            "tierExpiryDate": "2027-02-28T18:30:00+00:00", "pointsExpiryDate": "2027-06-30T18:30:00+00:00",
        }],
        "extendedFields": {"vehicle_no": "KA01AB1234", "fleet_size": 12},
        "associationDetails": {
            "hierarchyCode": "code-association2", "roleCode": "FC",
            "fleetCompany": {"externalId": "ACME"},
            "parentCustomer": {
                "profiles": [{
                    "identifiers": [
                        {"type": "mobile", "value": "919876544424"},
                        {"type": "email", "value": "asha.admin@example.com"},
                        {"type": "externalId", "value": "EXT-A"},
                    ],
                    "commChannels": [], "fields": {}, "source": "INSTORE", "accountId": "acc-1",
                }],
                "extendedFields": {},
            },
            "childCustomers": [],
        },
    }
    # The hand-built dict is exactly what the API model makes of it: nothing dropped or added.
    for key in ("admin", "driver"):
        wire = element_of(built, key)
        assert CustomerElement.model_validate(wire).to_api() == wire


def test_minimal_customer_without_company_is_plain_registration():
    row = {"customer_key": "solo", "external_id": "X1", "loyalty_type": "non_loyalty",
           "last_viewed_date": date(2025, 1, 1), "source": "INSTORE"}
    built = payload.build_elements(validated_customers([row]), COMPANIES)
    wire = element_of(built, "solo")
    assert "associationDetails" not in wire
    assert wire["loyaltyProgramEnrollments"] == []
    assert wire["loyaltyInfo"] == {"loyaltyType": "non_loyalty"}
    profile = wire["profiles"][0]
    assert profile["identifiers"] == [{"type": "externalId", "value": "X1"}]
    assert profile["commChannels"] == [] and "firstName" not in profile
    assert "lastViewedDate" not in profile  # never on the profile: it belongs to a mobilePush channel
    assert CustomerElement.model_validate(wire).to_api() == wire
    assert built.attrs["skipped"] == []


def test_last_viewed_date_goes_in_the_mobile_push_channel_of_a_push_token():
    with_token = validated_customers([{**DRIVER, "parent_customer_key": None}])
    with_token[tables.CUSTOMER_PUSH_TOKEN] = ["fcm-token-1"]
    profile = element_of(payload.build_elements(with_token, COMPANIES), "driver")["profiles"][0]
    assert "lastViewedDate" not in profile
    assert profile["commChannels"][-1] == {"type": "mobilePush", "value": "fcm-token-1", "primary": False,
                                           "verified": False, "meta": {"lastViewedDate": "2025-12-24"}}
    # Without a token (the contract has none) there is no channel to carry the date: not sent.
    plain = element_of(payload.build_elements(validated_customers([{**DRIVER, "parent_customer_key": None}]),
                                              COMPANIES), "driver")
    assert "lastViewedDate" not in json.dumps(plain)
    assert [c["type"] for c in plain["profiles"][0]["commChannels"]] == ["mobile", "email"]


def test_elements_carry_association_source_and_account():
    built = payload.build_elements(validated_customers([ADMIN, DRIVER, {"customer_key": "solo", "external_id": "X1",
                                                                      "source": None}]), COMPANIES)
    rows = built.set_index("entity_key")
    assert list(built.columns) == list(staged.ELEMENTS.columns)
    assert rows.loc["driver", ["hierarchy_code", "role_code", "company_external_id", "source", "account_id"]
                    ].tolist() == ["code-association2", "FC", "ACME", "MOBILE_APP", "app-7"]
    assert rows.loc["solo", "source"] == "INSTORE"  # the default profile source
    assert pd.isna(rows.loc["solo", "hierarchy_code"]) and pd.isna(rows.loc["solo", "account_id"])


def test_hash_is_sha256_of_the_canonical_payload_and_follows_the_parent():
    first = payload.build_elements(validated_customers([ADMIN, DRIVER]), COMPANIES).set_index("entity_key")
    again = payload.build_elements(validated_customers([DRIVER, ADMIN]), COMPANIES).set_index("entity_key")
    for key in ("admin", "driver"):
        text = first.loc[key, "payload"]
        assert first.loc[key, "payload_hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
        assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert again.loc[key, "payload_hash"] == first.loc[key, "payload_hash"]
    # The parent's new mobile changes the child's payload (it embeds the parent's identifiers).
    moved = payload.build_elements(validated_customers([{**ADMIN, "mobile": "919800000001"}, DRIVER]),
                                   COMPANIES).set_index("entity_key")
    assert moved.loc["driver", "payload_hash"] != first.loc["driver", "payload_hash"]
    # Mobile spelled differently (as validation accepts it) normalises to the same payload.
    spaced = payload.build_elements(validated_customers([{**ADMIN, "mobile": "919876544424"}, DRIVER]),
                                    COMPANIES).set_index("entity_key")
    assert spaced.loc["admin", "payload_hash"] == first.loc["admin", "payload_hash"]


def test_parts_shared_by_a_slice_encode_as_the_whole_element_would():
    # A parent's reference and a fields text are encoded once per slice and inserted
    # verbatim: every payload must still be canonical at every depth (its hash is the
    # sync state's key to "changed"), numbers past 64 bits included.
    fields = '{"z": {"b": 1, "a": [{"d": 1, "c": 2}]}, "\u00e9t\u00e9": "x", "A": 2.5}'
    rows = [ADMIN] + [{**DRIVER, "customer_key": f"d{i}", "external_id": f"EXT-{i}", "card_number": None,
                       "custom_fields": fields, "extended_fields": fields} for i in range(3)]
    rows.append({**rows[-1], "customer_key": "huge", "extended_fields": '{"n": 123456789012345678901234567890}'})
    built = payload.build_elements(validated_customers(rows), COMPANIES)
    for text in built["payload"]:
        assert text == payload.canonical_json(json.loads(text))
    assert element_of(built, "d2")["profiles"][0]["fields"] == json.loads(fields)
    assert len({element_of(built, f"d{i}")["associationDetails"]["parentCustomer"]["profiles"][0]["source"]
                for i in range(3)}) == 1
    assert element_of(built, "huge")["extendedFields"] == {"n": 123456789012345678901234567890}
    assert not built.attrs["skipped"]


def test_a_mobile_validation_refuses_is_never_sent_in_another_form():
    # Validation hands mobiles over as E.164 digits; a number written otherwise did not come
    # through it (and the payload has no region to read it with): left out with the reason,
    # not sent under a guess (or without its mobile).
    rows = [{**DRIVER, "parent_customer_key": None, "role_code": "GFA"},
            {**ADMIN, "customer_key": "spaced", "mobile": "+91 98765-44424", "email": "s@x.io", "external_id": "S"},
            {**ADMIN, "customer_key": "kid", "mobile": "919800000009", "email": "k@x.io", "external_id": "K",
             "role_code": "FC", "parent_customer_key": "spaced"},
            {**ADMIN, "customer_key": "blank", "mobile": "  ", "email": "b@x.io", "external_id": "B"}]
    built = payload.build_elements(validated_customers(rows), COMPANIES)
    reasons = dict(built.attrs["skipped"])
    assert set(reasons) == {"spaced", "kid"}
    assert "E.164" in reasons["spaced"] and "parent spaced" in reasons["kid"]
    blank = element_of(built, "blank")["profiles"][0]  # a blank mobile is no mobile, as in validation
    assert [i["type"] for i in blank["identifiers"]] == ["email", "externalId"]


def test_depth_and_rows_that_cannot_be_built():
    rows = [
        {"customer_key": "r", "email": "r@x.io", "company_external_id": "ACME", "role_code": "GFA"},
        {"customer_key": "m", "email": "m@x.io", "company_external_id": "ACME", "role_code": "FA",
         "parent_customer_key": "r"},
        {"customer_key": "l", "email": "l@x.io", "company_external_id": "ACME", "role_code": "FC",
         "parent_customer_key": "m"},
        {"customer_key": "orphan", "email": "o@x.io", "company_external_id": "ACME", "role_code": "FC",
         "parent_customer_key": "gone"},
        {"customer_key": "x", "email": "x@x.io", "company_external_id": "ACME", "role_code": "FC",
         "parent_customer_key": "y"},
        {"customer_key": "y", "email": "y@x.io", "company_external_id": "ACME", "role_code": "FC",
         "parent_customer_key": "x"},
        {"customer_key": "nocompany", "email": "n@x.io", "company_external_id": "NOPE", "role_code": "FC"},
        {"customer_key": "badjson", "email": "b@x.io", "extended_fields": "[1, 2]"},
        {"customer_key": "brokenjson", "email": "c@x.io", "custom_fields": '{"a": '},
    ]
    built = payload.build_elements(validated_customers(rows), COMPANIES)
    assert dict(zip(built.entity_key, built.depth)) == {"r": 0, "m": 1, "l": 2}
    reasons = dict(built.attrs["skipped"])
    assert set(reasons) == {"orphan", "x", "y", "nocompany", "badjson", "brokenjson"}
    assert "custom_fields is not valid JSON" in reasons["brokenjson"]
    assert "gone" in reasons["orphan"] and "cycle" in reasons["x"]
    assert "NOPE" in reasons["nocompany"] and "extended_fields" in reasons["badjson"]
    # They come back as failed outcomes with the reason, so write-back records them.
    failed = payload.skipped_outcomes(built.attrs["skipped"])
    assert sorted(failed.entity_key) == sorted(reasons) and (failed.status == "failed").all()
    assert failed.set_index("entity_key").loc["orphan", "error_message"].endswith(reasons["orphan"])
    assert failed.attempts.eq(0).all() and str(failed.synced_at.dtype) == "datetime64[us, UTC]"


def _tree_frame():
    """Three companies: ACME with a 3-level tree (1 + 3 + 7), BETA and GAMMA with 2 each."""
    customers, companies = _tree_customers()
    return payload.build_elements(customers, companies)


def _tree_customers() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The valid customers and companies ``_tree_frame`` is built of."""
    rows = [{"customer_key": "a0", "email": "a0@x.io", "company_external_id": "ACME", "role_code": "GFA"}]
    rows += [{"customer_key": f"a1{i}", "email": f"a1{i}@x.io", "company_external_id": "ACME",
              "role_code": "FA", "parent_customer_key": "a0"} for i in range(3)]
    rows += [{"customer_key": f"a2{i}", "email": f"a2{i}@x.io", "company_external_id": "ACME",
              "role_code": "FC", "parent_customer_key": f"a1{i % 3}"} for i in range(7)]
    for company in ("BETA", "GAMMA"):
        rows += [{"customer_key": f"{company}0", "email": f"{company}0@x.io", "company_external_id": company,
                  "role_code": "FA"},
                 {"customer_key": f"{company}1", "email": f"{company}1@x.io", "company_external_id": company,
                  "role_code": "FC", "parent_customer_key": f"{company}0"}]
    companies = pd.concat([COMPANIES, pd.DataFrame([{**COMPANIES.iloc[1].to_dict(), "company_external_id": "GAMMA"}])])
    return validated_customers(rows), companies


def test_slices_build_what_the_whole_frame_builds():
    # Parents and children land in different slices: references, depths and the rows
    # left out must not depend on where a slice boundary falls.
    rows = [{"customer_key": f"a2{i}", "email": f"a2{i}@x.io", "company_external_id": "ACME",
             "role_code": "FC", "parent_customer_key": f"a1{i % 3}"} for i in range(7)]
    rows += [{"customer_key": f"a1{i}", "mobile": f"9198000000{i:02d}", "company_external_id": "ACME",
              "role_code": "FA", "parent_customer_key": "a0", "account_id": f"acc-{i}"} for i in range(3)]
    rows += [{"customer_key": "a0", "external_id": "EXT-0", "company_external_id": "ACME", "role_code": "GFA"},
             {"customer_key": "orphan", "email": "o@x.io", "company_external_id": "ACME", "role_code": "FC",
              "parent_customer_key": "gone"}]
    customers = validated_customers(rows)
    whole = payload.build_elements(customers, COMPANIES)
    # In this process, and in forked workers (slices come back in row order either way).
    for processes, slices in ((1, 4), (3, 6)):  # with 3 workers: 6 equal slices, 2 per worker
        parts = list(payload.iter_elements(customers, COMPANIES, slice_rows=3, processes=processes))
        assert len(parts) == slices and max(len(part) for part in parts) <= 3
        sliced = pd.concat(parts, ignore_index=True)
        assert sliced[["entity_key", "depth", "payload", "payload_hash"]].equals(
            whole[["entity_key", "depth", "payload", "payload_hash"]])
        assert [item for part in parts for item in part.attrs["skipped"]] == whole.attrs["skipped"]
    assert element_of(whole, "a25")["associationDetails"]["parentCustomer"]["profiles"][0] == {
        "identifiers": [{"type": "mobile", "value": "919800000002"}], "commChannels": [], "fields": {},
        "source": "INSTORE", "accountId": "acc-2"}
    assert dict(zip(whole.entity_key, whole.depth))["a25"] == 2


def test_a_process_that_may_not_fork_builds_the_slices_itself(monkeypatch, caplog):
    # A daemonic multiprocessing process may not have children.
    import multiprocessing

    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    rows = [{"customer_key": f"c{i}", "email": f"c{i}@x.io"} for i in range(5)]
    with caplog.at_level("INFO", logger="associate.payload_workers"):
        parts = list(payload.iter_elements(validated_customers(rows), COMPANIES, slice_rows=2, processes=2))
    assert [list(part.entity_key) for part in parts] == [["c0", "c1"], ["c2", "c3"], ["c4"]]
    assert "in this process" in caplog.text


def test_payload_processes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASSOCIATE_PAYLOAD_PROCESSES", "3")
    assert payload_workers.build_processes() == 3 and payload_workers.build_processes(1) == 1
    monkeypatch.setenv("ASSOCIATE_PAYLOAD_PROCESSES", "many")
    with pytest.raises(ValueError, match="whole number"):
        payload_workers.build_processes()


def write_chunks(elements: pd.DataFrame, *, run_id: str, **options) -> list[str]:
    """Stage the elements as detect_changes does, then chunk them as build_batches does."""
    if "method" not in elements.columns:
        elements = elements.assign(change="new", method="POST")
    uri = staging.write_frame(elements, staging.run_path(run_id, "changes", "to_send.parquet"))
    return chunking.write_chunks_from(uri, run_id=run_id, **options)


@pytest.fixture
def staging_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    return tmp_path / "staging"


def test_chunks_keep_company_trees_together_and_batches_single_depth(staging_dir):
    built = _tree_frame()
    uris = write_chunks(built, run_id="manual__2026-01-01T00:00:00+00:00", batch_size=2, max_chunks=2)
    assert len(uris) == 2
    assert all("payloads/chunk-000" in uri and str(staging_dir) in uri for uri in uris)
    chunks = [staging.read_frame(uri) for uri in uris]
    assert sum(len(c) for c in chunks) == len(built)
    depth_of = dict(zip(built.entity_key, built.depth))
    company_of = dict(zip(built.entity_key, built.company_external_id))
    seen_companies = []
    for chunk in chunks:
        assert list(chunk.columns) == list(staged.CHUNK.columns)
        seen_companies.append({company_of[k] for k in chunk.entity_key})
        batches = chunk.groupby("batch_no").entity_key.apply(list)
        assert list(batches.index) == list(range(len(batches)))  # consecutive, in send order
        previous_depth = -1
        for members in batches:
            assert len(members) <= 2
            depths = {depth_of[k] for k in members}
            assert len(depths) == 1  # a batch never mixes depths
            assert depths.pop() >= previous_depth  # parents in earlier batches than children
            previous_depth = depth_of[members[0]]
        assert chunk.batch_no.is_monotonic_increasing
    # Each company lives in exactly one chunk; the big ACME tree alone, the two small ones together.
    assert sorted(map(sorted, seen_companies)) == [["ACME"], ["BETA", "GAMMA"]]


def test_chunk_count_is_capped_and_empty_frames_write_nothing(staging_dir):
    built = _tree_frame()
    assert len(write_chunks(built, run_id="r1", batch_size=100, max_chunks=10)) == 3
    assert len(write_chunks(built, run_id="r2", batch_size=100, max_chunks=1)) == 1
    assert write_chunks(built.iloc[0:0], run_id="r3", batch_size=100, max_chunks=4) == []


@pytest.mark.parametrize("max_chunks", [1, 2, 3])
def test_elements_built_in_send_order_are_chunked_as_ranges_that_send_what_copies_send(staging_dir, max_chunks):
    from associate.chunks import chunk_batches

    customers, companies = _tree_customers()
    # Shuffled, with updates, two sources and two accounts: every part of the batch key.
    customers = customers.sample(frac=1, random_state=7).reset_index(drop=True)
    customers["source"] = ["MOBILE_APP" if i % 3 == 0 else "INSTORE" for i in range(len(customers))]
    customers["account_id"] = [None if i % 4 else "acc-1" for i in range(len(customers))]
    registered = pd.Series([i % 2 == 0 for i in range(len(customers))]).to_numpy()
    hierarchy = payload.customer_hierarchy(customers)
    chunks = payload.send_order(customers, hierarchy[1], registered, max_chunks)
    order = np.concatenate(chunks)
    assert len(chunks) == max_chunks and sorted(order) == list(range(len(customers)))
    # Slices of the order, each taken by its worker: what the reordered frame builds.
    parts = list(payload.iter_elements(customers, companies, slice_rows=4, processes=2, order=order,
                                       hierarchy=hierarchy))
    for part in parts:
        part.attrs = {}
    elements = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(elements, payload.build_elements(customers.iloc[order].reset_index(drop=True),
                                                                   companies), check_like=False)
    elements = elements.assign(change="new", method=["PUT" if r else "POST" for r in registered[order]])
    uri = staging.write_frame(elements, staging.run_path("r-ranges", "changes", "to_send.parquet"))

    ranges = chunking.stage_chunks(uri, run_id="r-ranges", batch_size=2, max_chunks=max_chunks)
    copies = chunking.write_chunks_from(uri, run_id="r-copies", batch_size=2, max_chunks=max_chunks)
    assert [staged_uri for staged_uri, _ in ranges] == [uri] * max_chunks
    assert [rows for _, rows in ranges][0][0] == 0 and ranges[-1][1][1] == len(elements)
    assert not staging.run_path("r-ranges", "payloads").exists()  # nothing copied
    for (range_uri, rows), copy in zip(ranges, copies):
        numbers, batches = chunk_batches(range_uri, rows, 2)
        copied_numbers, copied = chunk_batches(copy)
        assert numbers == copied_numbers
        assert [(no, list(batch["entity_key"]), list(batch["method"])) for no, batch in batches] == [
            (no, list(batch["entity_key"]), list(batch["method"])) for no, batch in copied]


def test_chunk_ranges_recorded_with_the_elements_are_used_when_they_fit(staging_dir, monkeypatch):
    import json

    customers, companies = _tree_customers()
    hierarchy = payload.customer_hierarchy(customers)
    chunks = payload.send_order(customers, hierarchy[1], pd.Series([False] * len(customers)).to_numpy(), 2)
    elements = payload.build_elements(customers.iloc[np.concatenate(chunks)].reset_index(drop=True),
                                      companies).assign(change="new", method="POST")
    ranges = [[0, len(chunks[0])], [len(chunks[0]), len(elements)]]

    def to_send(run_id: str, recorded: list) -> str:
        with staging.FrameWriter(staging.run_path(run_id, "changes", "to_send.parquet"), staged.TO_SEND.empty()) as sink:
            sink.write(elements)
            sink.metadata[chunking.CHUNK_RANGES_KEY] = json.dumps(recorded)
        return sink.uri

    good = to_send("r-recorded", ranges)
    real_order = chunking.chunk_order
    monkeypatch.setattr(chunking, "chunk_order", lambda *a: pytest.fail("recorded ranges need no send order"))
    assert chunking.stage_chunks(good, run_id="r-recorded", batch_size=2, max_chunks=2) == [(good, r) for r in ranges]
    monkeypatch.setattr(chunking, "chunk_order", real_order)
    # Ranges for another chunk count, or that do not cover the file, are laid out again:
    # one chunk of two chunks' orders one after the other is not in send order (copied).
    assert [rows for _, rows in chunking.stage_chunks(good, run_id="r-recorded", batch_size=2, max_chunks=1)] == [None]
    short = to_send("r-short", [[0, 3], [3, len(elements) - 1]])
    assert chunking.stage_chunks(short, run_id="r-short", batch_size=2, max_chunks=2) == [(short, r) for r in ranges]


def test_elements_out_of_send_order_are_copied_to_chunk_files(staging_dir):
    built = _tree_frame().assign(change="new", method="POST")
    uri = staging.write_frame(built, staging.run_path("r-copied", "changes", "to_send.parquet"))
    chunks = chunking.stage_chunks(uri, run_id="r-copied", batch_size=2, max_chunks=2)
    assert len(chunks) == 2 and all(rows is None and "payloads/chunk-000" in path for path, rows in chunks)


def test_a_batch_is_one_depth_method_source_and_account(staging_dir):
    built = _tree_frame()
    # Mix registrations and updates, two sources and two accounts within one depth.
    built["method"] = ["PUT" if i % 2 else "POST" for i in range(len(built))]
    built["source"] = ["MOBILE_APP" if i % 3 == 0 else "INSTORE" for i in range(len(built))]
    built["account_id"] = [None if i % 4 else "acc-1" for i in range(len(built))]
    built["change"] = "new"
    uris = write_chunks(built, run_id="r-mixed", batch_size=2, max_chunks=1)
    chunk = staging.read_frame(uris[0])
    key = ["depth", "method", "source", "account_id"]
    rows = chunk.merge(built[["entity_key", "depth"]], on="entity_key")
    batches = rows.groupby("batch_no")
    for _, batch in batches:
        assert len(batch) <= 2
        assert len(batch[key].astype(str).drop_duplicates()) == 1  # one call: one method and query
    assert list(batches.groups) == list(range(len(batches)))
    assert rows.sort_values("batch_no")["depth"].is_monotonic_increasing  # parents before children
    # Every (depth, method, source, account) group is split only by the batch size.
    groups = rows.groupby(key, dropna=False).size()
    assert len(batches) == sum((n + 1) // 2 for n in groups)


def test_number_batches_restarts_at_every_key_change():
    from associate.chunking import number_batches

    keys = pd.DataFrame({"depth": [0, 0, 0, 0, 1, 1], "method": ["POST", "POST", "POST", "PUT", "POST", "POST"],
                         "source": "INSTORE", "account_id": [None] * 6})
    assert number_batches(keys, 2).tolist() == [0, 0, 1, 2, 3, 3]
    assert number_batches(keys["depth"], 3).tolist() == [0, 0, 0, 1, 2, 2]


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(first=names, last=names, fields=st.dictionaries(names, st.integers() | names, max_size=3))
def test_any_script_in_names_and_fields_survives_and_validates(first, last, fields):
    row = {**DRIVER, "parent_customer_key": None, "first_name": first, "last_name": last,
           "custom_fields": json.dumps(fields, ensure_ascii=False)}
    built = payload.build_elements(validated_customers([row]), COMPANIES)
    wire = element_of(built, "driver")
    assert (wire["profiles"][0]["firstName"], wire["profiles"][0]["lastName"]) == (first, last)
    assert wire["profiles"][0]["fields"] == fields
    assert CustomerElement.model_validate(wire).to_api() == wire


class _FakeClient:
    """Records each send_customers call; answers success, or details kept for names starting 'Kept'."""

    class settings:  # noqa: N801 - what sending reads of ClientSettings
        concurrency = 1

    class stats:  # noqa: N801
        @staticmethod
        def snapshot():
            return {"throttled": 0, "retries": 0}

    def __init__(self):
        self.calls = []

    def send_customers(self, elements, *, update, source, account_id):
        from associate.capillary.outcomes import BulkOutcome

        self.calls.append((update, source, account_id, len(elements)))
        outcomes = []
        for n, element in enumerate(elements):
            outcome = BulkOutcome(status="success", capillary_id=100 + n, attempts=1)
            if element["profiles"][0].get("firstName", "").startswith("Kept"):
                outcome.status, outcome.details_kept = "warning", True
                outcome.warnings = [{"code": None, "message": "already registered in Capillary with other details"}]
            outcomes.append(outcome)
        return outcomes


class _FakeHook:
    def __init__(self, client):
        self.client = client

    def get_conn(self):
        return self.client


def test_each_batch_is_one_call_with_its_method_and_query(staging_dir):
    from associate.sending import send_payload_chunk

    rows = [{**ADMIN, "first_name": "Kept Asha"}, {**DRIVER, "parent_customer_key": None},
            {"customer_key": "solo", "external_id": "X1"}]
    built = payload.build_elements(validated_customers(rows), COMPANIES)
    built["change"] = "new"
    built["method"] = ["POST", "PUT", "PUT"]
    uris = write_chunks(built, run_id="r-calls", batch_size=10, max_chunks=1)
    client = _FakeClient()
    out = staging.read_frame(send_payload_chunk(_FakeHook(client), uris[0], uris[0].replace("/payloads/", "/outcomes/"),
                                                run_id="r-calls")).set_index("entity_key")
    assert sorted(client.calls, key=str) == sorted([
        (False, "INSTORE", "acc-1", 1), (True, "MOBILE_APP", "app-7", 1), (True, "INSTORE", None, 1)], key=str)
    hashes = built.set_index("entity_key")["payload_hash"]
    assert out.loc["admin", "payload_hash"] == staged.DETAILS_KEPT_PREFIX + hashes["admin"]  # re-sent as PUT next run
    assert out.loc["driver", "payload_hash"] == hashes["driver"]
    assert out.loc["driver", ["hierarchy_code", "role_code", "company_external_id"]].tolist() == [
        "code-association2", "FC", "ACME"]
    assert out.loc["solo", ["hierarchy_code", "role_code"]].isna().all()
