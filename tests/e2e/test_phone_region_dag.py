"""The DAG's `phone_region` param through `airflow dags test`: national mobiles sent as E.164 digits."""

from __future__ import annotations

import sqlite3

import requests

from dag_support import TILL, airflow_env, migrate, run_dag
from reliability_support import input_frames, write_input_tables
from validation_cases import company, customer


def test_phone_region_param_reads_national_mobiles(tmp_path):
    from associate.capillary.settings import basic_authorization
    from associate.sandbox.launcher import SandboxProcess

    warehouse = tmp_path / "warehouse.db"
    customers = [customer("PH-GFA", role_code="GFA", parent_customer_key=None, mobile="98765 13001"),
                 customer("PH-SFA", role_code="SFA", parent_customer_key="PH-GFA", mobile="+91 98765-13002"),
                 customer("PH-SHORT", role_code="FA", parent_customer_key="PH-SFA", mobile="98765 1300")]
    write_input_tables(warehouse, *input_frames([company("CO1")], customers))
    with SandboxProcess(tmp_path / "sandbox.db", credentials=[TILL]) as sandbox:
        (tmp_path / "home").mkdir()
        env = airflow_env(tmp_path / "home", {"conn_type": "sqlite", "host": str(warehouse)}, sandbox.url)
        migrate(env)
        run = run_dag(env, conf={"mode": "full", "phone_region": "in", "max_quarantine_ratio": 1})
        assert run.returncode == 0 and run.state == "success", run.log[-5000:]
        assert "Mobiles without a country code are read as numbers of region IN" in run.log
        for digits in ("919876513001", "919876513002"):
            resp = requests.get(f"{sandbox.url}/v2/customers/lookup/customerDetails",
                                params={"source": "ALL", "identifierName": "mobile", "identifierValue": digits},
                                headers={"Authorization": basic_authorization(*TILL)}, timeout=10)
            assert resp.status_code == 200, (digits, resp.text[:300])
    with sqlite3.connect(warehouse) as db:
        reasons = db.execute("SELECT reason FROM associate_quarantine WHERE entity_key = 'PH-SHORT'").fetchall()
    assert reasons == [("mobile 98***1300 is not a valid number for region IN (read with default region IN)",)]
