"""The report's rows beyond the counts, read from a real warehouse: the latest runs and the quarantine."""

from __future__ import annotations

import pandas as pd
import pytest

from associate import staged, warehouse
from associate.report import RunSummary
from associate.tables import QUARANTINE_TABLE, RESULTS_TABLE


def results(run_id: str, day: int, statuses: dict[str, int]) -> pd.DataFrame:
    rows = [{"entity": "customer", "entity_key": f"{run_id}-{status}-{i}", "status": status, "capillary_id": None,
             "error_code": 1618 if status == "failed" else None, "error_message": None, "attempts": 1,
             "synced_at": pd.Timestamp(f"2026-03-{day:02d}T12:00:00Z")}
            for status, count in statuses.items() for i in range(count)]
    rows.append({"entity": "company", "entity_key": f"{run_id}-company", "status": "success", "capillary_id": 7,
                 "error_code": None, "error_message": None, "attempts": 1,
                 "synced_at": pd.Timestamp(f"2026-03-{day:02d}T12:00:00Z")})
    return pd.DataFrame(rows)


def quarantine(run_id: str, day: int, count: int) -> pd.DataFrame:
    return pd.DataFrame([{"entity": "customer", "entity_key": f"K{i}", "check": "mobile_valid",
                          "column_name": "mobile", "reason": f"mobile 91******{i:04d} is not a valid number",
                          "quarantined_at": pd.Timestamp(f"2026-03-{day:02d}T11:00:00Z")} for i in range(count)])


@pytest.mark.parametrize("conn", ["sqlite_conn", "pg_conn"])
def test_the_latest_runs_oldest_first_with_their_customers_and_quarantine(conn, request):
    conn_id = request.getfixturevalue(conn)
    warehouse.ensure_output_tables(conn_id)
    # Written out of order: the history orders by when the runs wrote, not by insertion or name.
    for run_id, day, statuses, rejected in (("run_c", 3, {"success": 5, "failed": 1}, 0),
                                            ("run_a", 1, {"success": 2, "warning": 1}, 3),
                                            ("run_b", 2, {"failed": 4}, 1)):
        warehouse.replace_run_rows(conn_id, RESULTS_TABLE, run_id, results(run_id, day, statuses))
        if rejected:
            warehouse.replace_run_rows(conn_id, QUARANTINE_TABLE, run_id, quarantine(run_id, day, rejected))
    history = warehouse.run_history(conn_id, limit=2)
    assert history.to_dict("records") == [
        {"run_id": "run_b", "success": 0, "warning": 0, "failed": 4, "quarantined": 1},
        {"run_id": "run_c", "success": 5, "warning": 0, "failed": 1, "quarantined": 0},
    ]

    summary = RunSummary.build(run_id="run_a", quarantine_rows=warehouse.read_table(conn_id, QUARANTINE_TABLE, "run_a"),
                               history=warehouse.run_history(conn_id))
    assert [row[0] for row in summary.history] == ["run_a", "run_b", "run_c"]
    assert summary.quarantine_samples == [("customer", "mobile_valid", f"K{i}", "mobile",
                                           f"mobile 91******{i:04d} is not a valid number") for i in range(3)]

    # The report's own run is left out of the query (its rows are not read) and counted from
    # its outcomes instead, as the latest run.
    others = warehouse.run_history(conn_id, exclude_run_id="run_c")
    assert others["run_id"].tolist() == ["run_a", "run_b"]
    own = staged.outcome_frame([staged.outcome_record("customer", f"C{i}", "success") for i in range(5)]
                               + [staged.outcome_record("customer", "C9", "failed", error_code=1618)])
    summary = RunSummary.build(run_id="run_c", outcomes=own, history=others)
    assert summary.history == [("run_a", 2, 1, 0, 3), ("run_b", 0, 0, 4, 1), ("run_c", 5, 0, 1, 0)]


def test_the_page_lists_failed_customers_with_what_to_do_and_draws_the_latest_runs(tmp_path):
    from associate import staged

    outcomes = staged.outcome_frame([
        staged.outcome_record("customer", "C1", "failed", error_code=1618, error_message="parent +919876543210 full"),
        staged.outcome_record("customer", "C2", "failed", error_code=1001, error_message="invalid mobile"),
        staged.outcome_record("customer", "C3", "success", capillary_id=5),
    ])
    history = pd.DataFrame([{"run_id": f"r{i}", "success": 10 * i, "warning": 1, "failed": i, "quarantined": 0}
                            for i in range(3)])
    summary = RunSummary.build(run_id="r2", outcomes=outcomes, history=history)
    assert summary.failed_customers == [("C2", "1001", "invalid mobile", "fix the identifier"),
                                        ("C1", "1618", "parent 91******3210 full", "move children or raise the limit")]
    assert summary.needs_action == [summary.failed_customers[1]]
    page = tmp_path / "report.html"
    summary.to_html(page)
    text = page.read_text()
    assert "<svg" in text and "<polyline" in text and "Needs action in Capillary" in text
    assert "9876543210" not in text


@pytest.mark.parametrize("conn", ["sqlite_conn", "pg_conn", "mariadb_conn"])
def test_the_report_reads_five_quarantined_rows_per_check_however_many_there_are(conn, request):
    conn_id = request.getfixturevalue(conn)
    warehouse.ensure_output_tables(conn_id)
    rows = pd.concat([quarantine("run_q", 4, 40),
                      quarantine("run_q", 4, 2).assign(check="email_valid", column_name="email"),
                      quarantine("run_other", 4, 9)], ignore_index=True)
    warehouse.replace_run_rows(conn_id, QUARANTINE_TABLE, "run_q", rows[rows.index < 42])
    warehouse.replace_run_rows(conn_id, QUARANTINE_TABLE, "run_other", rows[rows.index >= 42])

    samples = warehouse.quarantine_samples(conn_id, "run_q", per_check=5)

    summary = RunSummary.build(run_id="run_q", quarantine_rows=samples)
    assert [(row[1], row[2]) for row in summary.quarantine_samples] == [
        ("email_valid", "K0"), ("email_valid", "K1"),
        *[("mobile_valid", key) for key in ("K0", "K1", "K10", "K11", "K12")],
    ]
