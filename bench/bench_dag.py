"""Benchmark of the DAG as Airflow runs it: `airflow dags test` per run, each task's duration from Airflow.

For each backend and size it generates and loads a warehouse (bench.generate, as bench.run
does), then runs the DAG ``associate_customers`` with the real Airflow CLI in a fresh
AIRFLOW_HOME (its own SQLite metadata DB, migrated once per harness run) against a local
sandbox (one process per run on the size's sandbox database, so its counters are the run's):

1. a full run of each kind (``dry`` first, then ``real``: the first sync);
2. per change fraction: ``touch`` that share of customers (bench.generate), then a change
   run of each kind: ``incremental`` (default; its logical date is chosen so the run's data
   interval, one UTC day, holds the touch) or, with ``--change-mode full``, a full run that
   finds the changes by comparing payload hashes.

Per run it reports the wall time of the ``airflow dags test`` process and its start-up
cost (process start to the first task's start), each task's duration as Airflow recorded it
in the metadata DB (mapped ``post`` tasks summed and counted), peak memory (the largest
process's high-water mark, and the sampled peak of the process tree's summed PSS), the
requests the sandbox answered against the fewest the API allows for the run, HTTP 429s and,
when the sandbox is throttled, the sending phase's share of the budget. Where tasks write
timing files (``staging.run_path(run_id, "timing", ...)``: seconds inside HTTP requests and
waiting for the rate budget), a real run's local work is its wall time minus both.

With ``--deployment`` each size gets a local deployment instead (scripts/local_airflow.py:
api-server, scheduler, dag-processor, LocalExecutor, its own sandbox); runs are triggered
through the REST API and task durations read from ``/api/v2/dags/{dag_id}/dagRuns/{run_id}/
taskInstances``. ``--preset`` sets issue #17's jobs (it overrides the other flags it names).
docs/benchmarks.md says what every figure means.

    PYTHONPATH=plugins .venv/bin/python -m bench.bench_dag [--sizes 10000] [--backends sqlite,postgres]
        [--kinds dry,real] [--changes 0.01] [--change-mode incremental|full]
        [--rate-limit-rpm N --latency-ms M] [--preset issue-job|budget-20k] [--deployment]
        [--workdir bench/out/dag] [--out bench/out/dag/BENCHMARKS-dag.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "plugins"), str(ROOT)) if p not in sys.path]

from associate.sandbox.stats import UNBUDGETED  # noqa: E402  (requests outside the API budget)
from bench.memory import TreeMemory  # noqa: E402
from bench.run import DEFAULT_PG_ADMIN, PG_ADMIN_ENV, Backend, machine_info  # noqa: E402

DAG_ID = "associate_customers"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
TILL = ("store.server", "server123")  # the sandbox's default till
# README's pools (scripts/local_airflow.py): `airflow dags test` ignores them, a deployment uses them.
POOLS = {"capillary_api": (2, "Concurrent Capillary API calls"), "warehouse_writer": (1, "One warehouse writer")}
# Tasks in DAG order; the table shows these, the JSON every task of the run.
TASKS = ("wait_for_earlier_runs", "extract", "validate", "ensure_companies", "detect_changes", "build_batches",
         "approve_send", "post", "write_back", "report", "check_failures")
TASK_TITLES = {"wait_for_earlier_runs": "gate", "ensure_companies": "companies", "detect_changes": "changes",
               "build_batches": "batches", "check_failures": "check"}
COMPANY_ENDPOINTS = ("POST /v2/companies", "PUT /v2/companies", "GET /v2/companies")
BULK_ENDPOINTS = ("POST /v2/customers/bulk", "PUT /v2/customers/bulk")
DEFAULT_BATCH_SIZE = 100  # the DAG's batch_size param default
UNTHROTTLED_CLIENT_RPM = 1_000_000  # the client's budget when the sandbox has none: rate control off
RUN_TIMEOUT_S = 4 * 3600
PRESETS = {
    # Issue #17 item 4's job: 41 companies (40 valid, so 40 created) and 2 bad customers; the
    # issue's warehouse had 361 customers, bench.generate makes 41 companies from 400.
    "issue-job": dict(sizes=[400], bad_ratio=0.005, backends=["sqlite"], kinds=["real"], changes=[0.0],
                      change_mode="full", rate_limit_rpm=240, latency_ms=40),
    # Issue #17 item 3: the first sync of 20,000 customers and ~2,000 companies at 600 rpm, 50 ms.
    "budget-20k": dict(sizes=[20000], backends=["sqlite"], kinds=["real"], changes=[], rate_limit_rpm=600,
                       latency_ms=50),
}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- reading what a run left behind


def _epoch(value) -> float | None:
    """Seconds since the epoch of a metadata DB timestamp (naive text is UTC)."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def task_figures(instances: list[dict]) -> dict:
    """Per task id: seconds (summed over map indexes), count, states; from task instance rows."""
    tasks: dict[str, dict] = {}
    for ti in instances:
        entry = tasks.setdefault(ti["task_id"], {"seconds": 0.0, "n": 0, "states": {}, "start": None, "end": None})
        state = ti.get("state") or "none"
        entry["states"][state] = entry["states"].get(state, 0) + 1
        start, end = _epoch(ti.get("start_date")), _epoch(ti.get("end_date"))
        if start is None or end is None or state == "skipped":
            continue
        duration = ti.get("duration")
        entry["seconds"] += float(duration) if duration is not None else end - start
        entry["n"] += 1
        entry["start"] = start if entry["start"] is None else min(entry["start"], start)
        entry["end"] = end if entry["end"] is None else max(entry["end"], end)
    for entry in tasks.values():
        entry["seconds"] = round(entry["seconds"], 3)
    return tasks


def metadata_instances(home: Path, run_id: str) -> list[dict]:
    """The run's task instances from the harness's SQLite metadata DB."""
    with sqlite3.connect(home / "airflow.db", timeout=60) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT task_id, map_index, state, try_number, start_date, end_date, duration "
                          "FROM task_instance WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id)).fetchall()
    return [dict(row) for row in rows]


def finished_run(log_text: str) -> tuple[str | None, str | None]:
    """(run id, state) from the "DagRun Finished" line `airflow dags test` writes."""
    run_id = state = None
    for line in log_text.splitlines():
        if "DagRun Finished" in line and "run_id=" in line:
            run_id = line.split("run_id=", 1)[1].split(",", 1)[0]
            state = line.split("state=", 1)[1].split(",", 1)[0] if "state=" in line else None
    return run_id, state


def run_dir(staging: Path, run_id: str) -> Path:
    """The run's local staging folder (associate.staging.run_path under a file:// base)."""
    return staging / re.sub(r"[^A-Za-z0-9._=-]", "_", run_id)


def read_timing(folder: Path) -> dict | None:
    """Sum of the per-task timing files (contract 1 of the design), or None where no task wrote one."""
    files = sorted((folder / "timing").glob("*.json")) if (folder / "timing").is_dir() else []
    if not files:
        return None
    total = {"api_seconds": 0.0, "budget_wait_seconds": 0.0, "api_wall_seconds": 0.0, "requests": 0, "http_429": 0,
             "files": len(files), "by_task": {}}
    for path in files:
        data = json.loads(path.read_text())
        total["by_task"][path.stem] = data
        # A task's threads wait and send side by side: its seconds with Capillary are the
        # union of both (api_wall_seconds), not their sum.
        data.setdefault("api_wall_seconds", (data.get("api_seconds") or 0) + (data.get("budget_wait_seconds") or 0))
        for key in ("api_seconds", "budget_wait_seconds", "api_wall_seconds", "requests", "http_429"):
            total[key] += data.get(key) or 0
    for key in ("api_seconds", "budget_wait_seconds", "api_wall_seconds"):
        total[key] = round(total[key], 3)
    return total


def fewest_requests(folder: Path, *, dry_run: bool, known_companies: set[str], batch_size: int) -> dict:
    """The fewest requests the API allows for what the run had to send (or, dry, would have sent).

    Company writes: one per valid company of the run that the sync state did not know as
    created before the run (the harness changes no company; a changed one would add one
    PUT). Bulk calls: per batch key (depth, method, source, accountId: one call carries one
    method and one query) ceil(customers / batch size); ``bulk_by_depth`` is the issue's
    coarser sum over depths. Plus the one hierarchy read of the validation.
    """
    import pandas as pd

    companies_path = folder / "valid" / "companies.parquet"
    if companies_path.exists():
        ids = pd.read_parquet(companies_path, columns=["company_external_id"])["company_external_id"].astype(str)
        company_writes = int((~ids.isin(known_companies)).sum())
    else:
        company_writes = 0
    names = ("dry_run_to_send.parquet", "to_send.parquet") if dry_run else ("to_send.parquet",)
    to_send = next((folder / "changes" / name for name in names if (folder / "changes" / name).exists()), None)
    bulk = by_depth = customers = 0
    if to_send is not None:
        frame = pd.read_parquet(to_send, columns=["depth", "method", "source", "account_id"])
        customers = len(frame)
        if customers:
            keys = frame.fillna({"source": "", "account_id": ""})
            bulk = int(sum(math.ceil(n / batch_size) for n in keys.groupby(
                ["depth", "method", "source", "account_id"], dropna=False).size()))
            by_depth = int(sum(math.ceil(n / batch_size) for n in frame.groupby("depth").size()))
    return {"company_writes": company_writes, "customers": customers, "bulk": bulk, "bulk_by_depth": by_depth,
            "hierarchy": 1, "total": company_writes + bulk + 1}


def api_figures(stats: dict, fewest: dict, *, dry_run: bool, rpm: int) -> dict:
    """Requests the sandbox answered in the run, against the fewest; 429s; the budget's use."""
    by_endpoint = {endpoint: sum(statuses.values()) for endpoint, statuses in stats.get("requests", {}).items()}
    budgeted = {e: n for e, n in by_endpoint.items() if not any(part in e for part in UNBUDGETED)}
    company = sum(by_endpoint.get(e, 0) for e in COMPANY_ENDPOINTS)
    bulk = sum(by_endpoint.get(e, 0) for e in BULK_ENDPOINTS)
    requests = sum(budgeted.values())
    out = {
        "requests": requests, "by_endpoint": by_endpoint, "company_requests": company, "bulk_requests": bulk,
        "send_requests": company + bulk, "http_429": int(stats.get("rateLimited", 0)),
        "busiest_minute": (stats.get("busiestWindow") or {}).get("requests"),
        "elements": stats.get("elements"), "fewest": fewest,
        # A dry run may send nothing: its fewest is the hierarchy read; fewest["total"] is what a real run needs.
        "fewest_total": 1 if dry_run else fewest["total"],
    }
    out["ratio"] = round(requests / out["fewest_total"], 3) if out["fewest_total"] else None
    if rpm:
        out["budget"] = budget_share(stats, rpm)
    return out


def budget_share(stats: dict, rpm: int) -> dict:
    """The sending phase's use of the budget: requests between its first and last, against what the budget allows.

    n requests at exactly the budget's pace span (n - 1) intervals of 60 / rpm seconds, so
    the share is (n - 1) / (span * rpm / 60): 1.0 is the whole budget. The sending phase
    runs from the first company or bulk request to the last; its companies and bulk parts
    are also given alone (the local tasks between them are in the whole phase's span).
    """
    spans = stats.get("spans", {})
    counts = {endpoint: sum(statuses.values()) for endpoint, statuses in stats.get("requests", {}).items()}

    def share(endpoints) -> dict | None:
        present = [e for e in endpoints if e in spans and counts.get(e)]
        if not present:
            return None
        first = min(spans[e]["first"] for e in present)
        last = max(spans[e]["last"] for e in present)
        n = sum(counts[e] for e in present)
        seconds = last - first
        value = round((n - 1) / (seconds * rpm / 60), 3) if seconds > 0 and n > 1 else None
        return {"requests": n, "seconds": round(seconds, 2), "share": value}

    return {"rpm": rpm, "sending": share(COMPANY_ENDPOINTS + BULK_ENDPOINTS),
            "companies": share(COMPANY_ENDPOINTS), "bulk": share(BULK_ENDPOINTS)}


def known_company_ids(backend: Backend) -> set[str]:
    """Companies the warehouse's sync state knows as created (before a run); none before the first real run."""
    query = "SELECT entity_key FROM associate_sync_state WHERE entity = 'company' AND last_status = 'success'"
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.target, timeout=60) as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'associate_sync_state'").fetchone():
                return set()
            return {row[0] for row in db.execute(query)}
    import psycopg2

    db = psycopg2.connect(backend.target)
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT to_regclass('associate_sync_state')")
            if cursor.fetchone()[0] is None:
                return set()
            cursor.execute(query)
            return {row[0] for row in cursor.fetchall()}
    finally:
        db.close()


# ---------------------------------------------------------------- the harness


class DagBench:
    """Runs every (backend, size, run, kind) through Airflow and collects one result per run."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = Path(args.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = self.workdir / f"airflow-home-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.staging = self.workdir / "staging"
        self.logs = self.workdir / "logs"
        self.results: list[dict] = []
        self.setups: list[dict] = []
        self.logical_seconds = 0  # each run gets its own logical date (a second later than the last)
        self.deployment = None

    # --- environment

    def env(self, backend: Backend, sandbox_url: str) -> dict[str, str]:
        """The Airflow CLI's environment: README's connections and settings, all under the workdir."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "ASSOCIATE_"))}
        throttled = self.args.rate_limit_rpm > 0
        extra = {"rate_limit_rpm": self.args.client_rpm or (self.args.rate_limit_rpm if throttled
                                                             else UNTHROTTLED_CLIENT_RPM)}
        if self.args.concurrency:
            extra["concurrency"] = self.args.concurrency
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(ROOT / "plugins"),
            "AIRFLOW__ASSOCIATE__STAGING_BASE": "file://" + str(self.staging),
            "AIRFLOW__ASSOCIATE__REPORTS_DIR": str(self.workdir / "reports"),
            "AIRFLOW_CONN_WAREHOUSE_DEFAULT": backend.conn_env,
            "AIRFLOW_CONN_CAPILLARY_DEFAULT": json.dumps({
                "conn_type": "capillary", "host": sandbox_url, "login": TILL[0], "password": TILL[1], "extra": extra,
            }),
        })
        return env

    def airflow(self, env: dict[str, str], *args: str, log_name: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{log_name}.log").open("w") as out:
            rc = subprocess.run([AIRFLOW, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                timeout=900).returncode
        if rc != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed (exit {rc}); see {self.logs / log_name}.log")

    def prepare_home(self, env: dict[str, str]) -> float:
        """`airflow db migrate` and the pools, once per harness run; its seconds."""
        started = time.perf_counter()
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow(env, "db", "migrate", log_name="db-migrate")
        pools = self.home / "pools.json"
        pools.write_text(json.dumps({name: {"slots": slots, "description": text, "include_deferred": False}
                                     for name, (slots, text) in POOLS.items()}))
        self.airflow(env, "pools", "import", str(pools), log_name="pools")
        return time.perf_counter() - started

    # --- setup and changes (in child processes of bench.run, as its harness does)

    def child_stage(self, stage: str, spec: dict) -> dict:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]))
        done = subprocess.run([sys.executable, "-m", "bench.run", "--stage", stage, "--spec", json.dumps(spec)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        line = next((l for l in reversed(done.stdout.splitlines()) if l.startswith("BENCH-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{stage} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        result = json.loads(line[len("BENCH-RESULT "):])
        if not result.get("ok"):
            raise RuntimeError(f"{stage} failed: {result.get('error')}")
        return result

    # --- one run

    def next_logical_date(self, day: datetime) -> str:
        """A logical date on ``day`` (00:00 UTC) plus a second per earlier run: every run its own."""
        self.logical_seconds += 1
        return (day + timedelta(seconds=self.logical_seconds)).isoformat()

    def run_dag(self, env: dict[str, str], logical_date: str, conf: dict, name: str) -> dict:
        """One `airflow dags test`: wall time, peak memory, run id and state, from its process."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        command = [AIRFLOW, "dags", "test", DAG_ID, logical_date, "-c", json.dumps(conf)]
        with log_path.open("w") as out:
            started = time.time()
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            with TreeMemory(process.pid) as tree:
                # wait4: the rusage of this child alone (with its own children), not of every child of the harness.
                _, status, usage = _wait4(process, RUN_TIMEOUT_S)
            ended = time.time()
        text = log_path.read_text(errors="replace")
        run_id, state = finished_run(text)
        return {"returncode": os.waitstatus_to_exitcode(status), "started": started, "ended": ended,
                "wall_s": round(ended - started, 3), "run_id": run_id, "state": state, "log": str(log_path),
                # CPU seconds of the process and its workers: less sensitive than wall to a busy machine.
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_rss_mib": {"largest_process": round(usage.ru_maxrss / 1024, 1),
                                 "tree_rss_sampled": round(tree.peak_rss_mb, 1),
                                 "tree_pss_sampled": round(tree.peak_pss_mb, 1),
                                 "processes": tree.max_processes}}

    def measure(self, backend: Backend, size: int, run: str, kind: str, mode: str, logical_date: str,
                sandbox, extra: dict | None = None) -> dict:
        """Run the DAG once and gather every figure of the run into one result."""
        dry = kind == "dry"
        conf = {"mode": mode, "dry_run": dry}
        known = known_company_ids(backend)
        name = f"{backend.kind}-{size}-{_slug(run)}-{kind}"
        how = "REST trigger" if self.deployment is not None else f"airflow dags test {DAG_ID}"
        log(f"{backend.kind} {size:,} {run} {kind}: {how} {logical_date} -c '{json.dumps(conf)}'")
        result = {"backend": backend.kind, "size": size, "run": run, "kind": kind, "mode": mode, "conf": conf,
                  "logical_date": logical_date, "sandbox": {"rate_limit_rpm": self.args.rate_limit_rpm,
                                                            "latency_ms": self.args.latency_ms},
                  **(extra or {})}
        if self.deployment is not None:
            result["where"] = "deployment"
            result.update(self.deployment_run(logical_date, conf))
        else:
            result.update(self.run_dag(self.env(backend, sandbox.url), logical_date, conf, name))
            if result["run_id"]:
                result["tasks"] = task_figures(metadata_instances(self.home, result["run_id"]))
        result.update(self.timeline(result))
        stats = sandbox.stats()
        result["ok"] = result.get("state") == "success"
        staging = self.deployment.state_dir / "staging" if self.deployment is not None else self.staging
        folder = run_dir(staging, result.get("run_id") or "")
        if result.get("run_id") and folder.is_dir():
            fewest = fewest_requests(folder, dry_run=dry, known_companies=known, batch_size=DEFAULT_BATCH_SIZE)
            result["api"] = api_figures(stats, fewest, dry_run=dry, rpm=self.args.rate_limit_rpm)
            timing = read_timing(folder)
            result["timing"] = timing
            if timing is not None:
                result["local_work_s"] = round(result["wall_s"] - timing["api_wall_seconds"], 3)
            elif dry:
                result["local_work_s"] = result["wall_s"]  # a dry run sends nothing (one hierarchy read)
            plan = folder / "plan.json"
            if plan.exists():
                result["plan"] = json.loads(plan.read_text())
        else:
            result["api"] = {"requests": None}
        if result.get("run_id") and not self.args.keep_staging:
            # A 1M run stages GBs (payloads, preview); the figures are read, the files are not needed.
            reports = (self.deployment.state_dir if self.deployment is not None else self.workdir) / "reports"
            for path in (folder, run_dir(reports, result["run_id"])):
                shutil.rmtree(path, ignore_errors=True)
        self.save(result, name)
        log(summary_line(result))
        return result

    def timeline(self, result: dict) -> dict:
        """Start-up (process start to first task), between tasks, and tear-down (last task to exit)."""
        tasks = result.get("tasks") or {}
        starts = [t["start"] for t in tasks.values() if t.get("start")]
        ends = [t["end"] for t in tasks.values() if t.get("end")]
        if not starts or "started" not in result:
            return {}
        busy = sum(t["seconds"] for t in tasks.values())
        startup = min(starts) - result["started"]
        teardown = result["ended"] - max(ends)
        return {"startup_s": round(startup, 3), "teardown_s": round(teardown, 3), "tasks_s": round(busy, 3),
                "between_tasks_s": round(result["wall_s"] - startup - teardown - busy, 3)}

    def save(self, result: dict, name: str) -> None:
        self.results.append(result)
        out = self.workdir / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))

    # --- a size on a backend

    def run_size(self, kind: str, size: int) -> None:
        from associate.sandbox.launcher import SandboxProcess

        with Backend(kind, self.workdir, size, self.args.pg_admin_url) as backend:
            started = time.perf_counter()
            setup = self.child_stage("setup", {"backend": kind, "size": size, "target": backend.target,
                                               "seed": self.args.seed, "bad_ratio": self.args.bad_ratio})
            setup.update(backend=kind, size=size, setup_s=round(time.perf_counter() - started, 2))
            self.setups.append(setup)
            log(f"{kind} {size:,}: {setup['companies']:,} companies; generated in {setup['generate_s']:.1f} s, "
                f"loaded in {setup['load_s']:.1f} s")
            db = self.workdir / f"sandbox-{kind}-{size}.db"
            for suffix in ("", "-wal", "-shm", ".log"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            if self.args.deployment:
                self.deployment = self.deployment_for(backend, size)
                sandbox = DeploymentSandbox(self.deployment, self.sandbox_args())
            else:
                sandbox = SandboxProcess(db, rate_limit_rpm=self.args.rate_limit_rpm, latency_ms=self.args.latency_ms)
            today = _midnight(datetime.now(timezone.utc))
            try:
                sandbox.start()
                if not self.home.exists() and self.deployment is None:
                    self.home_setup_s = self.prepare_home(self.env(backend, sandbox.url))
                    log(f"AIRFLOW_HOME {self.home}: migrated in {self.home_setup_s:.1f} s")
                companies = {"companies": setup["companies"]}
                for run_kind in self.args.kinds:
                    sandbox.restart()  # fresh counters: the stats are this run's
                    self.measure(backend, size, "full", run_kind, "full", self.next_logical_date(today), sandbox,
                                 companies)
                for fraction in self.args.changes:
                    moment = datetime.now(timezone.utc).replace(microsecond=0)
                    touched = self.child_stage("touch", {"target": backend.target, "fraction": fraction,
                                                         "seed": int(fraction * 1e6) + 1,
                                                         "now": moment.isoformat()})["touched"]
                    # The run's data interval is the UTC day before its logical date: the touch's day.
                    day = _midnight(moment) + timedelta(days=1) if self.args.change_mode == "incremental" else today
                    run = f"{_percent(fraction)} changed ({self.args.change_mode})"
                    for run_kind in self.args.change_kinds:
                        sandbox.restart()
                        self.measure(backend, size, run, run_kind, self.args.change_mode,
                                     self.next_logical_date(day), sandbox, {**companies, "touched": touched})
            finally:
                sandbox.stop()
                self.deployment = None

    def run(self) -> None:
        try:
            for size in self.args.sizes:
                for kind in self.args.backends:
                    try:
                        self.run_size(kind, size)
                    except Exception as exc:  # the next case still runs; the report says what failed
                        log(f"{kind} {size:,} FAILED: {type(exc).__name__}: {exc}")
                        self.setups.append({"backend": kind, "size": size, "ok": False, "error": str(exc)[:300]})
        finally:
            if self.home.exists() and not self.args.keep_home:
                shutil.rmtree(self.home, ignore_errors=True)

    # --- the local deployment (scripts/local_airflow.py), LocalExecutor

    def deployment_for(self, backend: Backend, size: int):
        """A LocalDeployment (api-server, scheduler, dag-processor, its own sandbox) on this warehouse."""
        import importlib.util

        # scripts/ is no package: load `make airflow`'s module from its file.
        spec = importlib.util.spec_from_file_location("local_airflow", ROOT / "scripts" / "local_airflow.py")
        local_airflow = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(local_airflow)
        LocalDeployment, free_port = local_airflow.LocalDeployment, local_airflow.free_port
        throttled = self.args.rate_limit_rpm > 0
        extra = {"rate_limit_rpm": self.args.client_rpm or (self.args.rate_limit_rpm if throttled
                                                             else UNTHROTTLED_CLIENT_RPM)}
        if self.args.concurrency:
            extra["concurrency"] = self.args.concurrency
        state = self.workdir / f"deployment-{backend.kind}-{size}"
        shutil.rmtree(state, ignore_errors=True)
        return LocalDeployment(
            state, api_port=free_port(), sandbox_port=free_port(), warehouse=Path(backend.target)
            if backend.kind == "sqlite" else state / "unused.db",
            sandbox_args=self.sandbox_args(), capillary_extra=extra,
            extra_env={"AIRFLOW_CONN_WAREHOUSE_DEFAULT": backend.conn_env,
                       # Only the runs the harness triggers: no scheduled run once the DAG is unpaused.
                       "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})

    def sandbox_args(self) -> tuple[str, ...]:
        return ("--rate-limit-rpm", str(self.args.rate_limit_rpm), "--latency-ms", str(self.args.latency_ms))

    def deployment_run(self, logical_date: str, conf: dict) -> dict:
        """Trigger one run through the REST API; wall time from the trigger to the run's end, tasks from REST."""
        import urllib.parse

        deployment = self.deployment
        scheduler = deployment.process("scheduler")
        started = time.time()
        run_id = deployment.trigger(conf, logical_date)
        with TreeMemory(scheduler.pid) as tree:  # LocalExecutor's task processes are the scheduler's children
            state = deployment.wait_for_run(run_id, timeout=RUN_TIMEOUT_S)
        run = deployment.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}").json()
        ended = _epoch(run.get("end_date")) or time.time()
        return {"returncode": 0 if state == "success" else 1, "started": started, "ended": ended,
                "wall_s": round(ended - started, 3), "run_id": run_id, "state": state,
                "log": str(deployment.logs), "tasks": task_figures(deployment.task_instances(run_id)),
                "peak_rss_mib": {"scheduler_tree_rss_sampled": round(tree.peak_rss_mb, 1),
                                 "tree_pss_sampled": round(tree.peak_pss_mb, 1),
                                 "processes": tree.max_processes}}


class DeploymentSandbox:
    """A deployment seen as the harness's sandbox: start starts the whole deployment, restart its sandbox alone."""

    def __init__(self, deployment, sandbox_args: tuple[str, ...]):
        self.deployment, self.sandbox_args = deployment, sandbox_args

    def start(self) -> None:
        started = time.perf_counter()
        self.deployment.start(quiet=True)
        self.deployment.wait_for_dag()
        self.deployment.unpause()  # triggered runs wait while the DAG is paused
        log(f"local deployment {self.deployment.api_url} ready in {time.perf_counter() - started:.0f} s")

    def restart(self) -> None:
        self.deployment.restart_sandbox(*self.sandbox_args)

    def stats(self) -> dict:
        return self.deployment.sandbox_stats()

    def stop(self) -> None:
        self.deployment.stop(quiet=True)


def _wait4(process: subprocess.Popen, timeout: float):
    """Wait for the process (killing it after ``timeout`` s); (pid, status, rusage)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            return pid, status, usage
        if time.monotonic() > deadline:
            process.kill()
        time.sleep(0.1)


def _midnight(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------- report


def summary_line(r: dict) -> str:
    api = r.get("api") or {}
    tasks = r.get("tasks") or {}
    per_task = ", ".join(f"{TASK_TITLES.get(t, t)} {tasks[t]['seconds']:.1f}" + (f" (n={tasks[t]['n']})" if t == "post" else "")
                         for t in TASKS if t in tasks)
    return (f"{r['backend']} {r['size']:,} {r['run']} {r['kind']}: {r.get('state')} in {r.get('wall_s', 0):.1f} s "
            f"(start-up {r.get('startup_s', float('nan')):.1f} s; {per_task}); requests {api.get('requests')} / fewest "
            f"{api.get('fewest_total')}, 429s {api.get('http_429')}")


def _cell(value, fmt: str = "{:.1f}") -> str:
    return "" if value is None else fmt.format(value)


def render_markdown(results: list[dict], setups: list[dict], info: dict, command: str) -> str:
    """The DAG benchmark's section: machine, what is measured, the runs table, setups."""
    tasks = [t for t in TASKS if any(t in (r.get("tasks") or {}) for r in results)]
    lines = ["## The DAG as Airflow runs it (`bench.bench_dag`)", "",
             f"Generated by `{command}` (rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC) on "
             f"{info['cpu_model']} ({info['cpus']} logical CPUs), {info['ram_gib']} GiB RAM, Python {info['python']}, "
             f"SQLite {info['sqlite']}, PostgreSQL {info['postgres']}.", "",
             "Each row is one `airflow dags test associate_customers <logical date> -c '{\"mode\": ..., "
             "\"dry_run\": ...}'` process (tasks run one after the other in that process). **wall** = the "
             "process's elapsed seconds; **CPU** = user + system seconds of the process and its children (payload "
             "workers; not the sandbox's or PostgreSQL's), less sensitive than wall to a busy machine; **start-up** = from its start to the first task's start (CLI imports, "
             "DAG parse, serialisation, run creation); **tear-down** = from the last task's end to the process's "
             "exit; task columns = each task's duration as Airflow recorded "
             "it in the metadata DB (`gate` = wait_for_earlier_runs, the first task, which also pays the first "
             "task's in-process start-up; `post` = all mapped post tasks summed, n of them); **peak MiB** = the "
             "largest process's high-water mark (ru_maxrss via wait4) / the sampled peak of the process tree's "
             "summed PSS (forked payload workers included). **requests** = API requests the sandbox answered in "
             "the run (token and sandbox pages aside); **fewest** = company writes (valid companies the sync "
             "state did not know) + bulk calls (ceil(customers / 100) per depth, method, source and account) + "
             "the hierarchy read; a dry run's fewest is the hierarchy read alone. **budget** = the sending "
             "phase's (first to last company or bulk request) share of the sandbox's budget, throttled runs "
             "only. **local s** = wall minus the seconds tasks spent in HTTP requests or waiting for the rate "
             "budget, counted once where threads overlap (the tasks' timing files; blank where none). Rows "
             "marked **(deployment)** ran on a local LocalExecutor deployment, triggered through the REST API: "
             "wall = from the trigger to the run's end, start-up = to the first task's start, tear-down = from the "
             "last task's end to the run's end; CPU not measured, peak = the scheduler's process tree.", ""]
    header = (["backend", "customers", "run", "kind", "state", "wall s", "CPU s", "start-up s", "tear-down s"]
              + [TASK_TITLES.get(t, t) + (" s (n)" if t == "post" else " s") for t in tasks]
              + ["peak MiB", "requests", "fewest", "ratio", "429s", "budget", "local s"])
    text_columns = {"backend", "run", "kind", "state"}
    lines += ["| " + " | ".join(header) + " |",
              "|" + "".join("---|" if name in text_columns else "---:|" for name in header)]
    for r in results:
        api = r.get("api") or {}
        figures = r.get("tasks") or {}
        cells = []
        for t in tasks:
            f = figures.get(t)
            if f is None or not f["n"]:
                cells.append("" if f is None else "skipped")
            else:
                cells.append(f"{f['seconds']:.1f}" + (f" ({f['n']})" if t == "post" else ""))
        rss = r.get("peak_rss_mib") or {}
        share = ((api.get("budget") or {}).get("sending") or {}).get("share")
        lines.append("| " + " | ".join([
            r["backend"], f"{r['size']:,}", r["run"] + (" (deployment)" if r.get("where") == "deployment" else ""),
            r["kind"], str(r.get("state")), _cell(r.get("wall_s")),
            _cell(r.get("cpu_s")),
            _cell(r.get("startup_s")), _cell(r.get("teardown_s")), *cells,
            f"{_cell(rss.get('largest_process'), '{:.0f}') or '-'} / {rss.get('tree_pss_sampled', 0):.0f}"
            if rss else "",
            _cell(api.get("requests"), "{:,}"), _cell(api.get("fewest_total"), "{:,}"), _cell(api.get("ratio"), "{:.2f}"),
            _cell(api.get("http_429"), "{}"), _cell(share, "{:.0%}"), _cell(r.get("local_work_s")),
        ]) + " |")
    lines += targets(results)
    lines += ["", "Setup (not part of any run): generate + load the warehouse.", "",
              "| backend | customers | companies | generate s | load s |", "|---|---:|---:|---:|---:|"]
    for s in setups:
        if s.get("ok", True) and "generate_s" in s:
            lines.append(f"| {s['backend']} | {s['size']:,} | {s['companies']:,} | {s['generate_s']:.1f} | "
                         f"{s['load_s']:.1f} |")
        else:
            lines.append(f"| {s['backend']} | {s['size']:,} | failed: {s.get('error', '')[:120]} | | |")
    return "\n".join(lines) + "\n"


def targets(results: list[dict]) -> list[str]:
    """Issue #17 item 6's ratios: each run against the latest full run before it of the same backend and size.

    Runs merged from several invocations stay paired with their own invocation's full run,
    and a re-run that changed nothing has no 10 % target.
    """
    lines = []
    last_full: dict[tuple, dict] = {}
    for r in results:
        if not r.get("ok"):
            continue
        backend, size, kind = r["backend"], r["size"], r["kind"]
        if r["run"] == "full":
            last_full[(backend, size, kind)] = r
            dry = last_full.get((backend, size, "dry"))
            if kind == "real" and dry and r.get("local_work_s") is not None and r.get("timing"):
                lines.append(f"- {backend} {size:,}: real full run's local work / dry full run's wall = "
                             f"{r['local_work_s']:.1f} / {dry['wall_s']:.1f} s = "
                             f"{r['local_work_s'] / dry['wall_s']:.2f}x (target <= 1.2x)")
        elif r.get("touched") and (full := last_full.get((backend, size, kind))):
            lines.append(f"- {backend} {size:,}: {r['run']} {kind} / full {kind}: {r['wall_s']:.1f} / "
                         f"{full['wall_s']:.1f} s = {r['wall_s'] / full['wall_s']:.0%} (target <= 10 %)")
    return ["", "Issue #17 item 6's ratios (wall times of whole runs, start-up included):", "", *lines] if lines else []


# ---------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dag", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="comma-separated customer counts")
    parser.add_argument("--backends", default="sqlite", help="sqlite, postgres or both")
    parser.add_argument("--kinds", default="dry,real", help="dry, real or both (dry runs first)")
    parser.add_argument("--changes", default="0.01", help="fractions changed for the change runs ('' for none)")
    parser.add_argument("--change-kinds", help="kinds of the change runs (default: --kinds)")
    parser.add_argument("--change-mode", choices=["incremental", "full"], default="incremental",
                        help="change runs: incremental (the touch's day as data interval) or full (hash comparison)")
    parser.add_argument("--rate-limit-rpm", type=int, default=0, help="the sandbox's budget (0: unthrottled)")
    parser.add_argument("--latency-ms", type=int, default=0, help="the sandbox's latency per request")
    parser.add_argument("--client-rpm", type=int, default=0,
                        help="the connection's rate_limit_rpm (default: the sandbox's, or 1,000,000 unthrottled)")
    parser.add_argument("--concurrency", type=int, default=0, help="the connection's concurrency (default: its own)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="issue #17's jobs: issue-job or budget-20k")
    parser.add_argument("--deployment", action="store_true",
                        help="run on a local deployment (LocalExecutor), triggered through the REST API")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-ratio", type=float, default=0.03, help="share of customers made bad")
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "dag"))
    parser.add_argument("--out", help="markdown file (default <workdir>/BENCHMARKS-dag.md)")
    parser.add_argument("--pg-admin-url", default=os.environ.get(PG_ADMIN_ENV, DEFAULT_PG_ADMIN))
    parser.add_argument("--render-from", metavar="JSON,...",
                        help="only render the markdown from earlier raw results (a harness's .json, or runs' "
                             "files from <workdir>/results/)")
    parser.add_argument("--keep-staging", action="store_true",
                        help="keep each run's staged files and report (default: removed once measured)")
    parser.add_argument("--keep-home", action="store_true", help="keep the AIRFLOW_HOME (metadata DB, task logs)")
    args = parser.parse_args(argv)
    args.command = "python -m bench.bench_dag " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.preset:
        for name, value in PRESETS[args.preset].items():
            setattr(args, name, value)
    for name, cast in (("sizes", int), ("changes", float)):
        value = getattr(args, name)
        if isinstance(value, str):
            setattr(args, name, [cast(v) for v in value.split(",") if v.strip()])
    args.change_kinds = args.change_kinds or args.kinds
    for name in ("backends", "kinds", "change_kinds"):
        value = getattr(args, name)
        if isinstance(value, str):
            setattr(args, name, [v.strip() for v in value.split(",") if v.strip()])
    if set(args.backends) - {"sqlite", "postgres"}:
        parser.error("--backends: sqlite and/or postgres")
    if set(args.kinds + args.change_kinds) - {"dry", "real"}:
        parser.error("--kinds, --change-kinds: dry and/or real")
    # A dry run changes no state: it goes first.
    args.kinds = [k for k in ("dry", "real") if k in args.kinds]
    args.change_kinds = [k for k in ("dry", "real") if k in args.change_kinds]
    args.out = args.out or str(Path(args.workdir) / "BENCHMARKS-dag.md")
    return args


def render_from(args) -> int:
    """Merge the raw results of several invocations into one markdown file."""
    results, setups, commands, info = [], [], [], None
    for name in args.render_from.split(","):
        raw = json.loads(Path(name).read_text())
        if "results" not in raw:  # one run's file from <workdir>/results/
            results.append(raw)
            continue
        info = info or raw["machine"]
        if "--deployment" in raw["command"]:  # results written before runs said where they ran
            for result in raw["results"]:
                result.setdefault("where", "deployment")
        results += raw["results"]
        setups += raw["setups"]
        commands.append(raw["command"])
    info = info or machine_info(None)
    command = "`; `".join(commands) or f"python -m bench.bench_dag --render-from {args.render_from}"
    Path(args.out).write_text(render_markdown(results, setups, info, command), encoding="utf-8")
    print(f"wrote {args.out} from {len(args.render_from.split(','))} file(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_from:
        return render_from(args)
    bench = DagBench(args)
    started = time.perf_counter()
    bench.run()
    info = machine_info(args.pg_admin_url if "postgres" in args.backends else None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(bench.results, bench.setups, info, args.command), encoding="utf-8")
    raw = out.with_suffix(".json")
    raw.write_text(json.dumps({"machine": info, "command": args.command, "setups": bench.setups,
                               "results": bench.results}, indent=1, default=str))
    failed = [r for r in bench.results if not r.get("ok")] + [s for s in bench.setups if s.get("ok") is False]
    log(f"wrote {out} and {raw} in {time.perf_counter() - started:.0f} s; {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
