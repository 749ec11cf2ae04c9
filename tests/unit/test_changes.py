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
    assert list(result.to_send.columns) == list(elements(CURRENT).columns) + ["change", "method"]


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


def associated(rows: dict[str, tuple]) -> pd.DataFrame:
    """Elements with an association: key -> (hash, hierarchy, role, company)."""
    return pd.DataFrame({
        "entity_key": list(rows), "depth": 0, "payload": "{}",
        "payload_hash": [r[0] for r in rows.values()], "hierarchy_code": [r[1] for r in rows.values()],
        "role_code": [r[2] for r in rows.values()], "company_external_id": [r[3] for r in rows.values()],
        "source": "INSTORE", "account_id": None,
    })


def stored(rows: dict[str, tuple]) -> pd.DataFrame:
    """Sync state: key -> (hash, status, capillary_id, hierarchy, role, company)."""
    return pd.DataFrame([
        {"entity": "customer", "entity_key": key, "payload_hash": h, "last_status": status, "capillary_id": cid,
         "hierarchy_code": hierarchy, "role_code": role, "company_external_id": company}
        for key, (h, status, cid, hierarchy, role, company) in rows.items()])


def test_registered_customers_are_updated_the_others_registered():
    state = stored({"known": ("old", "success", 11, "H", "FC", "ACME"),
                    "lost": ("old", "failed", None, None, None, None),       # failed before Capillary had it
                    "retry": ("h3", "failed", 13, "H", "FC", "ACME")})       # failed retry of a known one
    current = associated({"new": ("h0", "H", "FC", "ACME"), "known": ("new", "H", "FC", "ACME"),
                          "lost": ("h2", "H", "FC", "ACME"), "retry": ("h3", "H", "FC", "ACME")})
    result = changes.select_changes(current, state)
    assert dict(zip(result.to_send.entity_key, result.to_send.method)) == {
        "new": "POST", "known": "PUT", "lost": "POST", "retry": "PUT"}
    forced = changes.select_changes(current, state, customer_keys=["known", "new"])
    assert dict(zip(forced.to_send.entity_key, forced.to_send.method)) == {"new": "POST", "known": "PUT"}


def test_an_association_that_cannot_move_is_held_back_with_its_code():
    state = stored({
        "role": ("a", "success", 1, "H", "FC", "ACME"),
        "company": ("b", "success", 2, "H", "FC", "ACME"),
        "hierarchy": ("c", "warning", 3, "H", "FC", "ACME"),
        "both": ("d", "failed", 4, "H", "FC", "ACME"),
        "parent_only": ("e", "success", 5, "H", "FC", "ACME"),   # same association, payload changed
        "old_row": ("f", "success", 6, None, None, None),        # written before associations were kept
        "unregistered": ("g", "failed", None, "H", "FC", "ACME"),  # no Capillary id: nothing to move
        "left_company": ("h", "success", 8, "H", "FC", "ACME"),  # now without a company: nothing sent to move
    })
    current = associated({
        "role": ("a2", "H", "FA", "ACME"), "company": ("b2", "H", "FC", "BETA"),
        "hierarchy": ("c2", "H2", "FC", "ACME"), "both": ("d", "H", "FA", "BETA"),
        "parent_only": ("e2", "H", "FC", "ACME"), "old_row": ("f2", "H", "FA", "BETA"),
        "unregistered": ("g", "H", "FA", "ACME"), "left_company": ("h2", None, None, None),
    })
    result = changes.select_changes(current, state)
    blocked = result.blocked.set_index("entity_key")
    assert blocked["error_code"].to_dict() == {"hierarchy": 1626, "role": 1627, "company": 1628, "both": 1627}
    assert blocked.loc["role", "reason"] == (
        "role change FC -> FA is not allowed through this API: move the customer in Capillary first, "
        "then send it with customer_keys")
    assert blocked.loc["both", "reason"].startswith("role change FC -> FA and company change ACME -> BETA are not")
    assert blocked.loc["hierarchy", "reason"].startswith("hierarchy change H -> H2 is not allowed")
    assert sorted(result.to_send.entity_key) == ["left_company", "old_row", "parent_only", "unregistered"]
    assert result.unchanged.empty  # a held-back row is neither sent nor unchanged
    assert result.counts()["association_blocked"] == 4
    # A forced run skips the check: the API decides.
    forced = changes.select_changes(current, state, customer_keys=["role", "company"])
    assert forced.blocked.empty and sorted(forced.to_send.entity_key) == ["company", "role"]
    assert set(forced.to_send.method) == {"PUT"}


def test_the_check_holds_across_slices():
    state = stored({"role": ("a", "success", 1, "H", "FC", "ACME")})
    selector = changes.ChangeSelector(state)
    first = selector.select(associated({"x": ("x", "H", "FC", "ACME")}))
    second = selector.select(associated({"role": ("a2", "H", "FA", "ACME")}))
    assert first.blocked.empty and list(second.blocked["entity_key"]) == ["role"]
    assert second.to_send.empty
