"""What the run report reads back from the output tables: quarantine samples and the latest runs."""

from __future__ import annotations

from typing import Any

import pandas as pd

from associate.warehouse.dialect import connect, ident, placeholder, table_name


def quarantine_samples(conn_id: str, run_id: str, per_check: int) -> pd.DataFrame:
    """At most ``per_check`` quarantined rows of a run per (entity, check), first by key (the report's samples).

    A window function reads the samples in the database: a broken 1M-row load quarantines
    hundreds of thousands of rows, and the report shows five of each check.
    """
    from associate.tables import QUARANTINE_TABLE

    with connect(conn_id) as (conn, dialect):
        check = ident("check", dialect)
        columns = f"entity, {check}, entity_key, column_name, reason"
        cur = conn.cursor()
        cur.execute(
            f"SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY entity, {check} "
            f"ORDER BY entity_key, column_name, reason) AS sample_no FROM {table_name(QUARANTINE_TABLE, dialect)} "
            f"WHERE run_id = {placeholder(conn)}) samples WHERE sample_no <= {int(per_check)}",
            (run_id,),
        )
        rows = cur.fetchall()
        cur.close()
    return pd.DataFrame.from_records(rows, columns=["entity", "check", "entity_key", "column_name", "reason"])


def run_history(conn_id: str, limit: int = 14, *, exclude_run_id: str | None = None) -> pd.DataFrame:
    """Customers per status and quarantined rows of the latest runs, oldest first (the report's chart).

    ``exclude_run_id`` leaves a run out (the report counts its own run from its outcomes):
    its results are not read at all, which at a million customers was ~2.4 s of the report.
    """
    from associate.tables import QUARANTINE_TABLE, RESULTS_TABLE

    with connect(conn_id) as (conn, _dialect):
        mark = placeholder(conn)
        cur = conn.cursor()
        # The runs first (the run key index answers), then each run's rows alone.
        cur.execute(f"SELECT DISTINCT run_id FROM {table_name(RESULTS_TABLE)}")
        run_ids = [str(run_id) for (run_id,) in cur.fetchall() if str(run_id) != exclude_run_id]
        results = []
        for run_id in run_ids:
            cur.execute(f"SELECT status, COUNT(*), MAX(synced_at) FROM {table_name(RESULTS_TABLE)} "
                        f"WHERE run_id = {mark} AND entity = 'customer' GROUP BY status", (run_id,))
            results += [(run_id, *row) for row in cur.fetchall()]
        cur.execute(f"SELECT run_id, COUNT(*), MAX(quarantined_at) FROM {table_name(QUARANTINE_TABLE)} GROUP BY run_id")
        quarantine = [row for row in cur.fetchall() if str(row[0]) != exclude_run_id]
        cur.close()
    runs: dict[str, dict[str, Any]] = {}
    for run_id, status, count, at in results:
        run = runs.setdefault(str(run_id), {"run_id": str(run_id), "at": at})
        run[str(status)] = int(count)
        run["at"] = max(str(run["at"] or ""), str(at or ""))
    for run_id, count, at in quarantine:
        run = runs.setdefault(str(run_id), {"run_id": str(run_id), "at": at})
        run["quarantined"] = int(count)
        run["at"] = max(str(run["at"] or ""), str(at or ""))
    columns = ["run_id", "success", "warning", "failed", "quarantined"]
    if not runs:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(list(runs.values()))
    for column in columns[1:]:
        frame[column] = frame.get(column, pd.Series(0, index=frame.index)).fillna(0).astype(int)
    frame["at"] = pd.to_datetime(frame["at"], utc=True, format="mixed", errors="coerce")
    return frame.sort_values(["at", "run_id"]).tail(limit)[columns].reset_index(drop=True)
