"""Benchmark of the quality gate: validate N generated customers (default 1,000,000); wall time and peak RSS.

Usage: PYTHONPATH=plugins .venv/bin/python -m bench.bench_validation [--customers N] [--seed S]

The warehouse comes from bench.generate (N customers in GFA -> SFA -> FA -> FC trees, N/10
companies, ``--bad-ratio`` of the rows broken in ~20 ways). It is staged as Parquet, then a
fresh process reads it and runs ``associate.validation.validate`` the way the DAG's task does,
so the peak RSS reported is the gate's own (reading the staged frames included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 1, 15, tzinfo=timezone.utc)


def hierarchies():
    """The generator's hierarchy: GFA -> SFA -> FA -> FC, maxChild 5000."""
    from associate.models import HierarchyDefinition, HierarchyRole
    from bench.generate import CHILD_ROLE, HIERARCHY_CODE

    return [HierarchyDefinition(code=HIERARCHY_CODE, name="Fleet association", roles=[
        HierarchyRole(code=role, childRoleCode=child, maxChild=5000) for role, child in CHILD_ROLE.items()
    ])]


def generate(n: int, seed: int, bad_ratio: float, workdir: Path) -> dict:
    """Generate and stage the warehouse; return what was made bad on purpose."""
    from bench.generate import generate as generate_warehouse

    started = time.perf_counter()
    warehouse = generate_warehouse(n, seed=seed, bad_ratio=bad_ratio, now=NOW)
    warehouse.customers.to_parquet(workdir / "customers.parquet")
    warehouse.companies.to_parquet(workdir / "companies.parquet")
    warehouse.bad_customers.to_parquet(workdir / "bad_customers.parquet")
    return {"generate_s": round(time.perf_counter() - started, 1), "customers": len(warehouse.customers),
            "companies": len(warehouse.companies), "made_bad": len(warehouse.bad_customers)}


def gate(workdir: Path) -> dict:
    """Child process: read the staged frames, validate, report timings, RSS and catch rate."""
    import pandas as pd

    from associate import validation

    started = time.perf_counter()
    customers = pd.read_parquet(workdir / "customers.parquet")
    companies = pd.read_parquet(workdir / "companies.parquet")
    loaded = time.perf_counter()
    result = validation.validate(customers, companies, hierarchies(), run_id="bench", now=NOW)
    done = time.perf_counter()
    bad = pd.read_parquet(workdir / "bad_customers.parquet")
    held = set(result.quarantine.loc[result.quarantine["entity"] == "customer", "entity_key"])
    missed = bad.loc[~bad["customer_key"].isin(held)]
    return {
        "read_s": round(loaded - started, 1),
        "validate_s": round(done - loaded, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "quarantine_rows": len(result.quarantine),
        "rejected_ratio": round(result.rejected_ratio(), 4),
        "valid_customers": len(result.customers),
        "made_bad_missed": int(len(missed)),
        "missed_kinds": sorted(set(missed["kind"])),
        "summary": validation.format_summary(result),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-ratio", type=float, default=0.03)
    parser.add_argument("--gate-only", type=Path, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    if args.gate_only:
        print(json.dumps(gate(args.gate_only)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_validation_") as tmp:
        workdir = Path(tmp)
        made = generate(args.customers, args.seed, args.bad_ratio, workdir)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"))
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "bench.bench_validation", "--gate-only", str(workdir)],
                               cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
    if child.returncode:
        sys.stderr.write(child.stderr)
        return child.returncode
    report = json.loads(child.stdout.strip().splitlines()[-1])
    summary = report.pop("summary")
    report = {**made, **report, "child_wall_s": round(wall, 1)}
    print(summary)
    print(json.dumps(report, indent=2))
    ok = report["validate_s"] <= 60 and report["peak_rss_mb"] <= 2048
    print(f"target (<= 60 s, <= 2 GB for {args.customers:,} customers): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
