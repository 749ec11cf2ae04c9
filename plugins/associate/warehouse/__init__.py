"""Warehouse I/O through any Airflow SQL connection: extract, output tables, sync state.

Modules, each layer importing only those above it:

- ``dialect``: connections, dialect detection, placeholders, identifiers, CREATE TABLE;
- ``rows``: frames as DB-API rows and their bulk insert (PostgreSQL COPY, executemany);
- ``extraction``: the extract SQL rendered for a run, the changed share, the streamed
  extract and its canonical frames (uses ``dialect``);
- ``outputs``: output tables, per-run rows, ``record_batch`` / ``BatchRecorder``, the sync state (uses
  ``dialect`` and ``rows``);
- ``report_reads``: what the run report reads back: quarantine samples, the latest runs (uses ``dialect``).

This package re-exports the names the DAG's tasks and operators call; anything else is
imported from its module.
"""

from __future__ import annotations

from associate.warehouse.extraction import FULL_EXTRACT_SHARE, changed_share, effective_mode, extract
from associate.warehouse.outputs import (
    BatchRecorder,
    drop_stale_run_rows,
    ensure_output_tables,
    read_sync_state,
    read_table,
    record_batch,
    replace_run_rows,
    upsert_sync_state,
)
from associate.warehouse.report_reads import quarantine_samples, run_history

__all__ = [
    "FULL_EXTRACT_SHARE",
    "changed_share",
    "drop_stale_run_rows",
    "effective_mode",
    "ensure_output_tables",
    "extract",
    "read_sync_state",
    "quarantine_samples",
    "read_table",
    "BatchRecorder",
    "record_batch",
    "replace_run_rows",
    "run_history",
    "upsert_sync_state",
]
