"""associate.changes: what a run sends, judged by payload hash and last status."""

from __future__ import annotations

import pandas as pd

from associate import changes


def elements(hashes: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({
        "entity_key": list(hashes), "company_external_id": "ACME", "depth": 0,
        "payload": [f'{{"k":"{k}"}}' for k in hashes], "payload_hash": list(hashes.values()),
    })


def state(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"entity": entity, "entity_key": key, "payload_hash": h, "capillary_id": 1, "last_status": status,
          "last_run_id": "r0", "last_synced_at": pd.Timestamp("2026-01-01", tz="UTC")}
         for entity, key, h, status in rows],
        columns=["entity", "entity_key", "payload_hash", "capillary_id", "last_status", "last_run_id",
                 "last_synced_at"])


CURRENT = {"new": "h1", "changed": "h2-new", "failed": "h3", "same": "h4", "warned": "h5"}
PREVIOUS = state([
    ("customer", "changed", "h2-old", "success"),
    ("customer", "failed", "h3", "failed"),
    ("customer", "same", "h4", "success"),
    ("customer", "warned", "h5", "warning"),
    ("company", "new", "h1", "success"),  # a company with the same key is another entity
])


def test_new_changed_and_failed_rows_are_sent_the_rest_is_unchanged():
    result = changes.select_changes(elements(CURRENT), PREVIOUS)
    assert dict(zip(result.to_send.entity_key, result.to_send.change)) == {
        "new": "new", "changed": "changed", "failed": "retry"}
    assert sorted(result.unchanged.entity_key) == ["same", "warned"]
    assert result.counts() == {"new": 1, "changed": 1, "retry": 1, "unchanged": 2}
    assert list(result.to_send.columns) == list(elements(CURRENT).columns) + ["change"]


def test_rerun_after_success_sends_nothing():
    first = changes.select_changes(elements(CURRENT), PREVIOUS.iloc[0:0])
    assert len(first.to_send) == len(CURRENT)
    after = state([("customer", k, h, "success") for k, h in CURRENT.items()])
    again = changes.select_changes(elements(CURRENT), after)
    assert again.to_send.empty and len(again.unchanged) == len(CURRENT)


def test_customer_keys_force_exactly_these_keys():
    result = changes.select_changes(elements(CURRENT), PREVIOUS, customer_keys=["same", "new", "ghost"])
    assert sorted(result.to_send.entity_key) == ["new", "same"]
    assert set(result.to_send.change) == {"forced"}
    assert sorted(result.unchanged.entity_key) == ["changed", "failed", "warned"]
    assert result.missing_keys == ["ghost"]


def test_empty_key_list_means_normal_change_detection():
    result = changes.select_changes(elements(CURRENT), PREVIOUS, customer_keys=[])
    assert sorted(result.to_send.entity_key) == ["changed", "failed", "new"]


def test_slices_against_one_state_read_give_the_whole_frames_answer():
    selector = changes.ChangeSelector(PREVIOUS)
    keys = list(CURRENT)
    parts = [selector.select(elements({k: CURRENT[k] for k in keys[i:i + 2]})) for i in range(0, len(keys), 2)]
    whole = changes.select_changes(elements(CURRENT), PREVIOUS)
    assert [k for p in parts for k in p.to_send["entity_key"]] == list(whole.to_send["entity_key"])
    assert [r for p in parts for r in p.to_send["change"]] == list(whole.to_send["change"])
    assert sum(len(p.unchanged) for p in parts) == len(whole.unchanged) == 2


def test_forced_keys_are_missing_only_when_no_slice_held_them():
    selector = changes.ChangeSelector(PREVIOUS, customer_keys=["same", "new", "ghost"])
    first = selector.select(elements({"same": "h4"}))
    second = selector.select(elements({"new": "h1", "changed": "h2-new"}))
    assert list(first.to_send["entity_key"]) == ["same"] and list(second.to_send["entity_key"]) == ["new"]
    assert selector.missing_keys() == ["ghost"]
