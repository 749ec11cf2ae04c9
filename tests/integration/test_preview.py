"""A dry run's change detection: nothing staged to send, every payload staged apart, a readable preview."""

from __future__ import annotations

import json
import logging

import pandas as pd

from associate import staged, staging, tables
from validation_cases import company, customer, validated_customers


def test_a_dry_run_previews_a_sample_and_stages_every_payload(tmp_path, monkeypatch, caplog, capfd):
    from associate import tasks

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_PREVIEW", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    monkeypatch.setenv("ASSOCIATE_REPORTS_DIR", str(tmp_path / "reports"))
    # 40 fleets: an admin (depth 0) and 9 drivers (depth 1) each.
    companies = [company(f"CO{c}") for c in range(40)]
    rows = [customer(f"C{c}-{i}", company_external_id=f"CO{c}", role_code="FA" if i == 0 else "FC",
                     parent_customer_key=None if i == 0 else f"C{c}-0", email=f"driver{c}x{i}@example.com")
            for c in range(40) for i in range(10)]
    run_id = "manual__preview"
    validated = {
        "customers": staging.write_frame(validated_customers(rows), staging.run_path(run_id, "valid", "customers.parquet")),
        "companies": staging.write_frame(pd.DataFrame(companies, columns=list(tables.COMPANY_COLUMNS)),
                                         staging.run_path(run_id, "valid", "companies.parquet")),
    }
    outcomes = staging.write_frame(staged.COMPANY_OUTCOMES.empty(), staging.run_path(run_id, "outcomes", "companies.parquet"))

    caplog.set_level(logging.INFO)
    to_send = tasks.detect_changes(validated=validated, company_outcomes=outcomes, warehouse_conn_id="warehouse_preview",
                                   run_id=run_id, customer_keys=None, dry_run=True)

    assert staging.read_frame(to_send).empty  # a dry run sends nothing
    preview_path = tmp_path / "reports" / run_id / "payload_preview.json"
    preview = json.loads(preview_path.read_text())
    everything = staging.read_frame(preview["all_payloads"])
    assert sorted(everything["entity_key"]) == sorted(r["customer_key"] for r in rows)
    assert preview["payloads_to_send"] == 400
    assert preview["counts"]["by_method"] == {"POST": 400} and preview["counts"]["by_depth"] == {"0": 40, "1": 360}
    assert preview["counts"]["companies"] == 40
    # Three of each fleet (its admin and first two drivers), and the run's third driver (depth 1).
    expected = [f"C{c}-{i}" for c in range(40) for i in range(3)]
    assert [p["customer_key"] for p in preview["payloads"]] == expected[:3] + ["C0-3"] + expected[3:]
    text = preview_path.read_text()
    assert "@example.com" in text and "driver0x1@example.com" not in text and rows[1]["mobile"] not in text
    assert rows[1]["mobile"] in "".join(everything["payload"])  # the staged set is what would be sent

    plan = staging.read_json(staging.run_path(run_id, "plan.json"))
    assert plan["preview"] == str(preview_path) and plan["preview_payloads"] == preview["all_payloads"]
    # The task log names both (Airflow may route logging to stdout once it configured it).
    log = caplog.text + capfd.readouterr().out
    assert str(preview_path) in log and preview["all_payloads"] in log
