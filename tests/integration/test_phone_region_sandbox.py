"""A default phone region end to end: the DAG's task functions against a real sandbox.

The Capillary connection's extra ``default_phone_region`` is IN; national and formatted
mobiles are sent as E.164 digits and Capillary finds each customer under them. The DAG
param overrides the extra; reformatting a number in the warehouse sends nothing again.
"""

from __future__ import annotations

import sqlite3

import pytest
import requests

from reliability_support import (
    AUDITOR, auditor_header, capillary_conn, input_frames, lookup_details, pipeline_environment, run_pipeline,
    write_input_tables,
)
from validation_cases import company, customer

C = "customer"
MOBILES = {"PH-NATIONAL": "98765 12001", "PH-PLUS": "+91 98765-12002", "PH-TRUNK": "(0) 98765 12003",
           "PH-E164": "919876512004", "PH-SHORT": "98765 1200", "PH-AMBIGUOUS": "6591234567"}
SENT = {"PH-NATIONAL": "919876512001", "PH-PLUS": "919876512002", "PH-TRUNK": "919876512003",
        "PH-E164": "919876512004"}


def _rows(mobiles: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """CO1 with GFA1 -> SFA1 -> FA1, and one FC under FA1 per mobile (the same rows every time)."""
    customers = [
        customer("GFA1", role_code="GFA", parent_customer_key=None, external_id="EXT-GFA1", mobile="919876500001"),
        customer("SFA1", role_code="SFA", parent_customer_key="GFA1", external_id="EXT-SFA1", mobile="919876500002"),
        customer("FA1", role_code="FA", parent_customer_key="SFA1", external_id="EXT-FA1", mobile="919876500003"),
    ]
    customers += [customer(key, mobile=mobile, external_id=f"EXT-{key}") for key, mobile in mobiles.items()]
    return [company("CO1")], customers


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    """One run with default_phone_region IN, then the tools to run again; (first run, sandbox url, path, rerun)."""
    from associate.sandbox.launcher import SandboxProcess
    from dag_support import TILL

    tmp = tmp_path_factory.mktemp("phone_region")
    path = tmp / "warehouse.db"
    write_input_tables(path, *input_frames(*_rows(MOBILES)))
    with SandboxProcess(tmp / "sandbox.db", credentials=[TILL, AUDITOR]) as sandbox, \
            pipeline_environment(tmp, sandbox.url, path):
        mp = pytest.MonkeyPatch()
        mp.setenv("AIRFLOW_CONN_CAPILLARY_DEFAULT", capillary_conn(sandbox.url, default_phone_region="IN"))
        try:
            yield run_pipeline(path, "phones_1"), sandbox.url, path
        finally:
            mp.undo()


def _lookup(url: str, mobile: str) -> dict | None:
    session = requests.Session()
    session.headers.update(auditor_header())
    return lookup_details(session, url, "mobile", mobile)


def test_national_and_formatted_mobiles_are_sent_as_e164_digits_and_matched(region_run):
    run, url, _ = region_run
    for key, digits in SENT.items():
        assert run.results[key][0] == "success", run.results.get(key)
        held = _lookup(url, digits)
        assert held is not None and held["id"] == run.results[key][1], key
        identifiers = {(i["type"], i["value"]) for i in held["profiles"][0]["identifiers"]}
        assert ("mobile", digits) in identifiers and ("externalId", f"EXT-{key}") in identifiers


def test_invalid_and_ambiguous_mobiles_are_quarantined_naming_the_region(region_run):
    run, _, _ = region_run
    short = dict(run.quarantine[(C, "PH-SHORT")])
    assert short["mobile_valid"] == "mobile 98***1200 is not a valid number for region IN (read with default region IN)"
    ambiguous = dict(run.quarantine[(C, "PH-AMBIGUOUS")])
    assert "SG (+65) and IN (+91)" in ambiguous["mobile_unambiguous"]
    assert "PH-SHORT" not in run.results and "PH-AMBIGUOUS" not in run.results


def test_the_dag_param_overrides_the_connection_region(region_run):
    from associate import tasks

    _, _, path = region_run
    conns = {"warehouse_conn_id": "warehouse_default", "capillary_conn_id": "capillary_default"}
    extracted = tasks.extract(run_id="phones_gb", mode="full", warehouse_conn_id="warehouse_default")
    tasks.validate(extracted=extracted, run_id="phones_gb", max_quarantine_ratio=1.0, phone_region="gb", **conns)
    with sqlite3.connect(path) as db:
        reasons = dict(db.execute("SELECT entity_key, reason FROM associate_quarantine "
                                  "WHERE run_id = 'phones_gb' AND \"check\" = 'mobile_valid'"))
    # Read as British numbers, India's national numbers are not valid; E.164 digits still are.
    assert reasons["PH-NATIONAL"].endswith("(read with default region GB)")
    assert "PH-E164" not in reasons and "PH-PLUS" not in reasons


def test_reformatting_a_number_in_the_warehouse_sends_nothing_again(region_run):
    _, _, path = region_run
    reformatted = {**MOBILES, "PH-NATIONAL": "+91 98765 12001", "PH-PLUS": "919876512002"}
    write_input_tables(path, *input_frames(*_rows(reformatted)))
    again = run_pipeline(path, "phones_2")
    assert again.plan["update"] == again.plan["register"] == 0 and not again.results, again.plan
