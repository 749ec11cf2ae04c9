"""The quality gate's catalogue through a real warehouse (SQLite and PostgreSQL) and the extract."""

from __future__ import annotations

import pandas as pd
import pytest
import validation_cases as vc

from associate import staging, tables, validation, warehouse
from associate.warehouse.outputs import read_table
from bench.loaders import load_frames


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
