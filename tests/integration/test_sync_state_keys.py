"""The sync state of some keys: by key lookups, or past the lookup limit by one scan filtered in memory."""

from __future__ import annotations

import json

import pandas as pd

from associate import warehouse


def _state(entity, key, hash_, capillary_id):
    return {"entity": entity, "entity_key": key, "payload_hash": hash_, "capillary_id": capillary_id,
            "last_status": "success", "last_run_id": "r1", "last_synced_at": pd.Timestamp("2026-01-01T00:00:00Z")}


def test_past_the_lookup_limit_the_state_read_is_the_same_rows(tmp_path, monkeypatch):
    from associate.warehouse import outputs

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_STATE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    keys = ["a", "c", "zz", "C1"]  # zz: never synced; C1: a company's key
    assert warehouse.read_sync_state("warehouse_state", "customer", keys=keys).empty  # no table yet
    warehouse.ensure_output_tables("warehouse_state")
    rows = pd.DataFrame([_state("customer", k, f"h{k}", n) for n, k in enumerate("abcd")]
                        + [_state("company", "C1", "hc", 99)])
    rows["capillary_id"] = rows["capillary_id"].astype("Int64")
    warehouse.upsert_sync_state("warehouse_state", rows)

    looked_up = warehouse.read_sync_state("warehouse_state", "customer", keys=keys)
    monkeypatch.setattr(outputs, "STATE_KEYS_LOOKUP_LIMIT", 2)  # four keys: one scan, filtered in memory
    scanned = warehouse.read_sync_state("warehouse_state", "customer", keys=keys)
    assert sorted(scanned["entity_key"]) == sorted(looked_up["entity_key"]) == ["a", "c"]
    by_key = ["entity_key", "payload_hash", "capillary_id"]
    assert (scanned[by_key].sort_values("entity_key").reset_index(drop=True)
            .equals(looked_up[by_key].sort_values("entity_key").reset_index(drop=True)))
