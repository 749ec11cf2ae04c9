"""Benchmark of recording one sent batch (``warehouse.record_batch``) as a run's rows grow.

The operator records every batch of 100 customers right after Capillary answers it: its
results, warnings and sync state, in one transaction. At a million customers a run holds
a million result rows by its last batch, so the cost of one record must not grow with
them (it did, when the per-key DELETE could only use the ``run_id`` index).

For each backend and each number of rows already recorded in the run, it records 20
batches of 100 and prints the median and the slowest, in ms per batch.

    PYTHONPATH=plugins python -m bench.bench_record [--recorded 0,100000,1000000]
        [--backends sqlite,postgres] [--batches 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))

from bench.run import DEFAULT_PG_ADMIN, PG_ADMIN_ENV, Backend, _outcomes  # noqa: E402  (after the path is set)

CONN_ID = "bench_record_warehouse"
BATCH = 100


def outcomes(keys: list[str]):
    """Success outcomes of ``keys`` as bench.run makes them (one in 50 with a warning)."""
    import pandas as pd

    return _outcomes("customer", pd.Series(keys), pd.Series(["h"] * len(keys)))


def measure(recorded: int, batches: int) -> list[float]:
    """Seconds per record_batch call after ``recorded`` rows of the same run are in place."""
    from associate import reconcile, warehouse
    from associate.tables import RESULTS_TABLE

    run_id = f"bench-record-{uuid.uuid4().hex[:8]}"
    warehouse.ensure_output_tables(CONN_ID)
    if recorded:
        earlier = outcomes([f"{run_id}-{i}" for i in range(recorded)])
        results, _ = reconcile.results_from_outcomes(earlier, run_id)
        warehouse.replace_run_rows(CONN_ID, RESULTS_TABLE, run_id, results)
        warehouse.upsert_sync_state(CONN_ID, reconcile.state_from_outcomes(earlier, run_id))
    seconds = []
    for number in range(batches):
        batch = outcomes([f"{run_id}-{recorded + number * BATCH + i}" for i in range(BATCH)])
        results, warnings = reconcile.results_from_outcomes(batch, run_id)
        state = reconcile.state_from_outcomes(batch, run_id)
        started = time.perf_counter()
        warehouse.record_batch(CONN_ID, run_id, results=results, warnings=warnings, state=state)
        seconds.append(time.perf_counter() - started)
    return seconds


def run_backend(kind: str, sizes: list[int], batches: int, pg_admin: str) -> list[dict]:
    """One fresh database per backend (as bench.run makes them); the sizes run one after the other in it."""
    import logging

    logging.getLogger("associate").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Backend(kind, Path(tmp), 0, pg_admin) as backend:
        os.environ["AIRFLOW_CONN_" + CONN_ID.upper()] = backend.conn_env
        for recorded in sizes:
            seconds = measure(recorded, batches)
            rows.append({"backend": kind, "recorded": recorded,
                         "median_ms": 1000 * statistics.median(seconds), "max_ms": 1000 * max(seconds)})
            print(f"{kind:8} {recorded:>9,} rows already recorded: median {rows[-1]['median_ms']:.1f} ms, "
                  f"slowest {rows[-1]['max_ms']:.1f} ms per batch of {BATCH}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_record", description=__doc__.splitlines()[0])
    parser.add_argument("--recorded", default="0,100000,1000000", help="rows of the run recorded before timing")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per size")
    parser.add_argument("--pg-admin-url", default=os.environ.get(PG_ADMIN_ENV, DEFAULT_PG_ADMIN))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.recorded.split(",") if s]
    rows = []
    for kind in [b.strip() for b in args.backends.split(",") if b.strip()]:
        rows += run_backend(kind, sizes, args.batches, args.pg_admin_url)
    print(f"\n| backend | rows of the run already recorded | median ms per batch of {BATCH} | slowest ms |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['backend']} | {row['recorded']:,} | {row['median_ms']:.1f} | {row['max_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
