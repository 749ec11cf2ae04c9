"""Benchmark harness: the pipeline's own work per stage, on SQLite and PostgreSQL.

For each backend and size it generates a warehouse (bench.generate), then runs a full
run and incremental runs with a fraction of customers changed, calling the same stage
functions as the DAG's tasks (associate.tasks for change detection and batches;
associate.warehouse / validation / reconcile where the task would call Capillary). Time spent waiting on the Capillary API is excluded: the send step is
replaced by outcomes as if every element succeeded. Every stage runs in a fresh
subprocess, so its wall time, CPU time and peak RSS are its own; stages hand frames
to each other through associate.staging Parquet files, as the Airflow tasks do.

    python -m bench.run [--sizes 10000,100000,1000000] [--changes 0.001,0.01,0.1,1]
                        [--backends sqlite,postgres] [--quick] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONN_ID = "bench_warehouse"
CAPILLARY_CONN_ID = "bench_capillary"
PG_ADMIN_ENV = "ASSOCIATE_BENCH_PG"
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
STAGES = ("extract", "validate", "detect_changes", "build_batches", "write_back")
STAGE_TITLES = {
    "extract": "extract (SQL -> canonical frames, staged)",
    "validate": "validate (GX gate + quarantine write)",
    "detect_changes": "the DAG's detect_changes task (sync state read, payload build + hashes, "
                      "change selection, elements to send staged)",
    "build_batches": "the DAG's build_batches task (chunk and batch files)",
    "write_back": "write-back (results, warnings, sync state)",
}
SEND_TITLE = "send (ensure companies + operator send to the sandbox; API time included)"
BATCH_SIZE = 100
MAX_CHUNKS = 8
STAGE_TIMEOUT_S = 1800


@dataclass
class StageResult:
    """One stage of one run, measured in its own process."""

    backend: str
    size: int
    run: str
    stage: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    rows_in: int = 0
    rows_out: int = 0
    ok: bool = True
    error: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- child side: one stage


def _hierarchies():
    """The hierarchy definitions the sandbox seeds (the DAG reads them from the API)."""
    from associate.models import HierarchyDefinition, HierarchyRole

    roles = [HierarchyRole(code=code, childRoleCode=child, maxChild=5000)
             for code, child in (("GFA", "SFA"), ("SFA", "FA"), ("FA", "FC"), ("FC", None))]
    return [HierarchyDefinition(id=1, code="code-association2", name="Fleet association", roles=roles)]


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageRunner:
    """Runs one stage of one run; prepare() is untimed, work() is what gets measured."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.run_id = spec["run_id"]

    def path(self, *parts: str):
        from associate import staging

        return staging.run_path(self.run_id, *parts)

    def warm_up(self) -> None:
        """Load the connection's hook once, so Airflow's lazy imports are not timed as stage work."""
        from associate.warehouse.dialect import db_hook

        db_hook(CONN_ID)

    def prepare_extract(self):
        from associate import tasks

        self.tasks = tasks
        self.warm_up()

    def work_extract(self):
        extracted = self.tasks.extract(
            warehouse_conn_id=CONN_ID, run_id=self.run_id, mode=self.spec["mode"],
            interval_start=self.spec.get("interval_start"), interval_end=self.spec.get("interval_end"),
        )
        counts = extracted["counts"]
        return counts["customers"], counts["customers"], {"companies": counts["companies"], "mode": extracted["mode"]}

    def prepare_validate(self):
        from associate import validation, warehouse

        self.validation, self.warehouse = validation, warehouse
        self.hierarchies = _hierarchies()
        self.warm_up()

    def work_validate(self):
        from associate import staging
        from associate.tables import QUARANTINE_TABLE

        customers = staging.read_frame(self.path("extract", "customers.parquet"))
        companies = staging.read_frame(self.path("extract", "companies.parquet"))
        result = self.validation.validate(customers, companies, self.hierarchies, run_id=self.run_id)
        self.warehouse.ensure_output_tables(CONN_ID)
        self.warehouse.replace_run_rows(CONN_ID, QUARANTINE_TABLE, self.run_id, result.quarantine)
        # attrs (validation's side notes) are not staged; pandas cannot always serialise them.
        result.customers.attrs, result.companies.attrs = {}, {}
        staging.write_frame(result.customers, self.path("valid", "customers.parquet"))
        staging.write_frame(result.companies, self.path("valid", "companies.parquet"))
        rejected = int(customers.shape[0] - result.customers.shape[0])
        return len(customers), len(result.customers), {
            "quarantine_rows": len(result.quarantine), "rejected_customers": rejected,
            "rejected_ratio": round(float(result.rejected_ratio()), 4),
        }

    def prepare_detect_changes(self):
        from associate import staging, tasks
        from associate.reconcile import not_sent_outcomes

        self.tasks = tasks
        self.warm_up()
        # Every company ensured: no customer is held back for its company.
        self.company_outcomes = staging.write_frame(not_sent_outcomes([], []), self.path("outcomes", "companies.parquet"))

    def work_detect_changes(self):
        from associate import staging

        validated = {"customers": str(self.path("valid", "customers.parquet")),
                     "companies": str(self.path("valid", "companies.parquet"))}
        self.tasks.detect_changes(validated=validated, company_outcomes=self.company_outcomes,
                                  warehouse_conn_id=CONN_ID, run_id=self.run_id, customer_keys=None, dry_run=False,
                                  batch_size=BATCH_SIZE)
        plan = staging.read_json(self.path("plan.json"))
        return plan["built"] + plan["held_back"], plan["to_send"], {
            "unchanged": plan["unchanged"], "held_back": plan["held_back"]}

    def prepare_build_batches(self):
        from associate import tasks

        self.tasks = tasks

    def work_build_batches(self):
        from associate import staging

        chunks = self.tasks.build_batches(changes=str(self.path("changes", "to_send.parquet")), run_id=self.run_id,
                                          batch_size=BATCH_SIZE, max_chunks=MAX_CHUNKS)
        staging.write_json({"chunks": chunks}, self.path("chunks.json"))
        plan = staging.read_json(self.path("plan.json"))
        return plan["to_send"], plan["to_send"], {"chunks": len(chunks)}

    def prepare_send(self):
        from associate.hook import CapillaryHook

        self.hook = CapillaryHook(capillary_conn_id=CAPILLARY_CONN_ID)
        self.hook.get_conn().get_hierarchies()  # authenticate and open the session before the timer

    def work_send(self):
        """The real send: ensure companies, then every chunk through the operator's code path."""
        from associate import staging
        from associate.company_requests import ensure_companies_from_frame
        from associate.sending import send_payload_chunk

        companies = staging.read_frame(self.path("valid", "companies.parquet"))
        company_outcomes = ensure_companies_from_frame(self.hook, companies)
        staging.write_frame(company_outcomes, self.path("outcomes", "companies.parquet"))
        chunks = staging.read_json(self.path("chunks.json"))["chunks"]
        outcome_uris, statuses = [], {}
        for chunk in chunks:  # build_batches' keyword arguments of each post task
            outcome_uri = chunk["outcome_uri"]
            outcome_uris.append(send_payload_chunk(
                self.hook, chunk["payload_uri"], outcome_uri, run_id=self.run_id, warehouse_conn_id=CONN_ID,
                rows=chunk.get("rows"), batch_size=chunk.get("batch_size")))
            for status, count in staging.read_frame(outcome_uri)["status"].value_counts().items():
                statuses[status] = statuses.get(status, 0) + int(count)
        staging.write_json({"outcomes": outcome_uris}, self.path("outcomes.json"))
        self.hook.close()
        sent = sum(statuses.values())
        return sent, sent, {"statuses": statuses, "companies": len(company_outcomes),
                            "company_failures": int((company_outcomes["status"] == "failed").sum())}

    def prepare_write_back(self):
        """Outcomes of the send stage, or, without one, success outcomes for what would be sent (untimed)."""
        import pandas as pd

        from associate import reconcile, staging, warehouse
        from associate.staged import OUTCOME_COLUMNS

        self.reconcile, self.warehouse = reconcile, warehouse
        self.warm_up()
        if self.spec.get("send"):
            frames = [staging.read_frame(self.path("outcomes", "companies.parquet"))]
            frames += [staging.read_frame(uri) for uri in staging.read_json(self.path("outcomes.json"))["outcomes"]]
            self.outcomes = pd.concat(frames, ignore_index=True)[list(OUTCOME_COLUMNS)]
            return
        # A chunk's rows: a file of its own, or a range of the staged elements to send.
        sent = [staging.read_columns(chunk["payload_uri"], ["entity_key", "payload_hash"]).iloc[
                    slice(*chunk["rows"]) if chunk.get("rows") else slice(None)]
                for chunk in staging.read_json(self.path("chunks.json"))["chunks"]]
        customers = pd.concat(sent, ignore_index=True) if sent else pd.DataFrame(
            {"entity_key": pd.Series([], dtype=object), "payload_hash": pd.Series([], dtype=object)})
        companies = staging.read_frame(self.path("valid", "companies.parquet"))
        self.outcomes = pd.concat([
            _outcomes("company", companies["company_external_id"].astype(str), None),
            _outcomes("customer", customers["entity_key"].astype(str), customers["payload_hash"]),
        ], ignore_index=True)

    def work_write_back(self):
        from associate.tables import RESULTS_TABLE, WARNINGS_TABLE

        results, warnings = self.reconcile.results_from_outcomes(self.outcomes, self.run_id)
        self.warehouse.ensure_output_tables(CONN_ID)
        self.warehouse.replace_run_rows(CONN_ID, RESULTS_TABLE, self.run_id, results)
        self.warehouse.replace_run_rows(CONN_ID, WARNINGS_TABLE, self.run_id, warnings)
        self.warehouse.upsert_sync_state(CONN_ID, self.reconcile.state_from_outcomes(self.outcomes, self.run_id))
        return len(self.outcomes), len(results), {"warnings": len(warnings)}

    def measure(self, stage: str) -> dict:
        """Prepare (untimed), then time the stage's work: wall, CPU, peak RSS, rows."""
        from associate import staging

        staging.staging_base().exists()  # object-storage imports and setup happen before the timer
        getattr(self, f"prepare_{stage}")()
        rss_before = _current_rss_mb()
        from bench.memory import TreeMemory

        with TreeMemory(os.getpid()) as tree:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            children0 = _children_cpu_s()
            rows_in, rows_out, extra = getattr(self, f"work_{stage}")()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            workers_cpu = _children_cpu_s() - children0
        extra["rss_before_mb"] = round(rss_before, 1)
        extra["workers_cpu_s"] = round(workers_cpu, 2)
        extra["self_peak_rss_mb"] = round(_peak_rss_mb(), 1)
        # Alone, the process's own high-water mark is exact: the tree counts only with workers.
        tree_peak = tree.peak_pss_mb if tree.max_processes > 1 else 0.0
        extra["tree_peak_pss_mb"] = round(tree_peak, 1)
        # Worker processes (payload build) count: their CPU, and memory as the process tree's PSS.
        return {"wall_s": wall, "cpu_s": cpu + workers_cpu, "peak_rss_mb": max(_peak_rss_mb(), tree_peak),
                "rows_in": int(rows_in), "rows_out": int(rows_out), "extra": extra}


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _current_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _outcomes(entity: str, keys, hashes):
    """Success outcomes (interfaces.md format); one in 50 customers carries a warning."""
    import numpy as np
    import pandas as pd

    n = len(keys)
    warned = (np.arange(n) % 50 == 7) & (entity == "customer")
    warning = json.dumps([{"code": 8056, "message": "Invalid mobile"}])
    return pd.DataFrame({
        "entity": entity,
        "entity_key": keys.to_numpy(dtype=object),
        "status": np.where(warned, "warning", "success"),
        "capillary_id": pd.array(np.arange(1, n + 1) + (10**8 if entity == "company" else 10**6), dtype="Int64"),
        "error_code": pd.array([None] * n, dtype="Int64"),
        "error_message": pd.Series([None] * n, dtype=object),
        "attempts": np.ones(n, dtype="int64"),
        "synced_at": pd.Timestamp.now(tz="UTC"),
        "payload_hash": (hashes.to_numpy(dtype=object) if hashes is not None else pd.Series([None] * n, dtype=object)),
        "warnings": np.where(warned, warning, "[]"),
    })


def _setup(spec: dict) -> dict:
    """Generate and load the warehouse (timed separately: it is not pipeline work)."""
    from bench import generate

    wall0 = time.perf_counter()
    warehouse = generate.generate(spec["size"], seed=spec.get("seed", 7), bad_ratio=spec.get("bad_ratio", 0.03))
    generated = time.perf_counter()
    if spec["backend"] == "sqlite":
        generate.load_sqlite(spec["target"], warehouse.companies, warehouse.customers)
    else:
        generate.load_postgres(spec["target"], warehouse.companies, warehouse.customers)
    return {"generate_s": generated - wall0, "load_s": time.perf_counter() - generated,
            "companies": len(warehouse.companies), "bad_customers": len(warehouse.bad_customers),
            "peak_rss_mb": _peak_rss_mb()}


def _touch(spec: dict) -> dict:
    """Mark a fraction of customers changed at a given instant."""
    from bench import generate

    keys = generate.touch(spec["target"], spec["fraction"], seed=spec["seed"],
                          now=datetime.fromisoformat(spec["now"]))
    return {"touched": len(keys)}


def child_main(stage: str, spec: dict) -> int:
    """Entry point of a stage subprocess: prints one JSON line with the measurement."""
    result = run_stage(stage, spec)
    print("BENCH-RESULT " + json.dumps(result, default=str), flush=True)
    return 0 if result["ok"] else 1


def run_stage(stage: str, spec: dict) -> dict:
    """Run one stage (or setup / touch) here; returns the measurement or the error."""
    try:
        if stage == "setup":
            result = _setup(spec)
        elif stage == "touch":
            result = _touch(spec)
        else:
            result = StageRunner(spec).measure(stage)
        result["ok"] = True
    except Exception as exc:  # reported to the parent, which marks the run incomplete
        import traceback

        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return result


# ---------------------------------------------------------------- parent side: orchestration


class Backend:
    """A warehouse database for one size: a SQLite file or a fresh PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path, size: int, pg_admin: str):
        self.kind, self.workdir, self.size, self.pg_admin = kind, workdir, size, pg_admin
        self.db_name = f"associate_bench_{os.getpid()}_{size}_{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> Backend:
        if self.kind == "sqlite":
            self.path = self.workdir / f"warehouse-{self.size}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.target = str(self.path)
            self.conn_env = json.dumps({"conn_type": "sqlite", "host": str(self.path)})
        else:
            self._admin(f'CREATE DATABASE "{self.db_name}"')
            self.target = self.pg_admin.rsplit("/", 1)[0] + "/" + self.db_name
            self.conn_env = self.target
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "postgres":
            self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _admin(self, sql: str) -> None:
        import psycopg2

        connection = psycopg2.connect(self.pg_admin, connect_timeout=10)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()


class Harness:
    """Runs every (backend, size, run) and collects the measurements."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.capillary_url: str | None = None  # set while a sandbox serves the send stage
        self.workdir = Path(args.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.results: list[StageResult] = []
        self.setups: list[dict] = []

    def env(self, backend: Backend) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])
        env.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
        env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        env["AIRFLOW_CONN_" + CONN_ID.upper()] = backend.conn_env
        env["ASSOCIATE_STAGING_BASE"] = "file://" + str(self.workdir / "staging")
        if self.capillary_url:
            # Rate control effectively off: the sandbox runs without a limit, we measure our own work.
            env["AIRFLOW_CONN_" + CAPILLARY_CONN_ID.upper()] = json.dumps({
                "conn_type": "http", "host": self.capillary_url, "login": "store.server",
                "password": "server123", "extra": {"rate_limit_rpm": 1_000_000, "concurrency": 2},
            })
        return env

    def stages(self) -> tuple[str, ...]:
        """The stages of a run: with a sandbox, the real send comes between diff and write-back."""
        return STAGES[:4] + ("send",) + STAGES[4:] if self.capillary_url else STAGES

    def spawn(self, stage: str, spec: dict, backend: Backend) -> dict:
        """Run one stage in a fresh interpreter (or here, with --in-process) and return its result."""
        if self.args.in_process:
            os.environ.update(self.env(backend))
            for path in reversed(os.environ["PYTHONPATH"].split(os.pathsep)):
                if path not in sys.path:
                    sys.path.insert(0, path)
            return run_stage(stage, spec)
        command = [sys.executable, "-m", "bench.run", "--stage", stage, "--spec", json.dumps(spec)]
        completed = subprocess.run(command, cwd=ROOT, env=self.env(backend), capture_output=True,
                                   text=True, timeout=STAGE_TIMEOUT_S)
        # Each stage's output is kept, so a failure can be read after the run.
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        name = f"{spec.get('run_id') or backend.kind + '-' + str(backend.size)}-{stage}.log"
        (logs / name).write_text(completed.stdout + completed.stderr, encoding="utf-8")
        line = next((l for l in reversed(completed.stdout.splitlines()) if l.startswith("BENCH-RESULT ")), None)
        if line is None:
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
            return {"ok": False, "error": f"stage {stage} exited {completed.returncode}: {' | '.join(tail)}"}
        result = json.loads(line[len("BENCH-RESULT "):])
        if not result.get("ok"):
            tail = completed.stderr.strip().splitlines()[-1:] if completed.stderr else []
            result["error"] = result.get("error") or " ".join(tail)
        return result

    def log(self, message: str) -> None:
        print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)

    def run_pipeline(self, backend: Backend, size: int, run: str, spec: dict) -> None:
        """All stages of one run, in order; a failed stage marks the rest as not run."""
        failed = ""
        for stage in self.stages():
            record = StageResult(backend.kind, size, run, stage)
            if failed:
                record.ok, record.error = False, f"not run: {failed} failed"
            else:
                result = self.spawn(stage, {**spec, "stage": stage, "send": bool(self.capillary_url)}, backend)
                if result.get("ok"):
                    for name in ("wall_s", "cpu_s", "peak_rss_mb", "rows_in", "rows_out", "extra"):
                        setattr(record, name, result[name])
                    self.log(f"{backend.kind} {size} {run} {stage}: {record.wall_s:.2f} s wall, "
                             f"{record.cpu_s:.2f} s cpu, {record.peak_rss_mb:.0f} MiB, "
                             f"{record.rows_in} -> {record.rows_out}")
                else:
                    record.ok, record.error, failed = False, result.get("error", "failed"), stage
                    self.log(f"{backend.kind} {size} {run} {stage} FAILED: {record.error}")
            self.results.append(record)

    def run_size(self, kind: str, size: int) -> None:
        """Setup, one full run, then one incremental run per change fraction (with a fresh sandbox if --send)."""
        if not self.args.send:
            return self._run_size(kind, size)
        from associate.sandbox.launcher import SandboxProcess

        db = self.workdir / f"sandbox-{kind}-{size}.db"
        for suffix in ("", "-wal", "-shm", ".log"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        with SandboxProcess(db, rate_limit_rpm=0) as sandbox:
            self.capillary_url = sandbox.url
            try:
                self._run_size(kind, size)
            finally:
                self.capillary_url = None

    def _run_size(self, kind: str, size: int) -> None:
        with Backend(kind, self.workdir, size, self.args.pg_admin_url) as backend:
            setup = self.spawn("setup", {"backend": kind, "size": size, "target": backend.target,
                                         "seed": self.args.seed}, backend)
            setup.update(backend=kind, size=size)
            self.setups.append(setup)
            if not setup.get("ok"):
                self.log(f"{kind} {size} setup FAILED: {setup.get('error')}")
                return
            self.log(f"{kind} {size}: generated in {setup['generate_s']:.1f} s, loaded in {setup['load_s']:.1f} s")
            tag = f"bench-{kind}-{size}-{uuid.uuid4().hex[:6]}"
            self.run_pipeline(backend, size, "full", {"run_id": f"{tag}-full", "mode": "full"})
            previous = datetime.now(timezone.utc)
            for fraction in self.args.changes:
                # Each touch gets its own instant, later than every earlier one.
                moment = max(datetime.now(timezone.utc), previous + timedelta(seconds=2)).replace(microsecond=0)
                previous = moment
                touched = self.spawn("touch", {"target": backend.target, "fraction": fraction,
                                               "seed": int(fraction * 1e6) + 1, "now": moment.isoformat()}, backend)
                run = f"incremental {_percent(fraction)} changed"
                if not touched.get("ok"):
                    self.log(f"{kind} {size} touch FAILED: {touched.get('error')}")
                    continue
                self.run_pipeline(backend, size, run, {
                    "run_id": f"{tag}-incr-{fraction}", "mode": "incremental",
                    "interval_start": moment.isoformat(), "interval_end": (moment + timedelta(seconds=1)).isoformat(),
                    "touched": touched["touched"],
                })

    def run(self) -> None:
        for size in self.args.sizes:
            for kind in self.args.backends:
                self.run_size(kind, size)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


# ---------------------------------------------------------------- report


def machine_info(pg_admin: str | None) -> dict:
    """CPU count and model, RAM, Python and library versions of this machine."""
    import sqlite3

    import pandas as pd

    info = {"cpus": os.cpu_count(), "cpu_model": "unknown", "ram_gib": None,
            "python": platform.python_version(), "pandas": pd.__version__, "sqlite": sqlite3.sqlite_version,
            "os": f"{platform.system()} {platform.release()}", "postgres": None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            info["cpu_model"] = next((l.split(":", 1)[1].strip() for l in handle if l.startswith("model name")),
                                     "unknown")
        with open("/proc/meminfo", encoding="ascii") as handle:
            kib = next(int(l.split()[1]) for l in handle if l.startswith("MemTotal:"))
            info["ram_gib"] = round(kib / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    if pg_admin:
        try:
            import psycopg2

            with psycopg2.connect(pg_admin, connect_timeout=5) as connection, connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                info["postgres"] = cursor.fetchone()[0]
            connection.close()
        except Exception:  # the report still gets written without the server version
            info["postgres"] = "unreachable"
    return info


def _bar(value: float, scale: float, width: int = 40) -> str:
    return "#" * max(1, round(width * value / scale)) if value > 0 else ""


def render_markdown(results: list[StageResult], setups: list[dict], info: dict, args) -> str:
    """BENCHMARKS.md: machine, per-run summary, per-stage table, ASCII chart."""
    lines = ["# Benchmarks", "",
             f"Generated by `{getattr(args, 'command', None) or _command_line(args)}` "
             f"(rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC).", "",
             "## Machine", "",
             f"- CPU: {info['cpu_model']} ({info['cpus']} logical CPUs)",
             f"- RAM: {info['ram_gib']} GiB", f"- OS: {info['os']}",
             f"- Python {info['python']}, pandas {info['pandas']}, SQLite {info['sqlite']}, "
             f"PostgreSQL {info['postgres']}", "",
             "## What is measured", "",
             "Each stage runs in a fresh Python process calling the same functions as the DAG's tasks. "
             "Imports and loading the warehouse connection's hook happen before the timer starts; "
             "reading the previous stage's staged Parquet files and writing its own are inside it "
             "(as in the DAG), except for write-back, whose input outcomes are prepared untimed. Wall = elapsed seconds of the stage's work; "
             "CPU = user+system seconds of that process and of its payload-building worker processes "
             "(PostgreSQL server CPU is not included); "
             "peak RSS = the process's high-water mark (includes the interpreter and imports) or, where "
             "worker processes ran, the highest sampled sum of the PSS of the process and its workers "
             "if that is larger (forked workers share pages with the process; PSS counts them once). "
             "Time waiting on the Capillary API is excluded: the send step is replaced by success "
             "outcomes (1 in 50 with a warning) that write-back then stores. An incremental run "
             "extracts the changed rows plus their ancestors, descendants and companies, validates "
             "them, and sends only payloads whose hash changed.", "",
             ("**In-process mode** (`--quick` / `--in-process`): all stages ran in one process, so peak RSS "
              "is cumulative and wall times include first-use imports; use the default mode for real figures. "
              if args.in_process else "")
             + "Stages: " + "; ".join(f"**{s}** = {t}" for s, t in STAGE_TITLES.items()) + "."
             + (f" With `--send`: **send** = {SEND_TITLE}, reported in its own column and not in the totals."
                if any(r.stage == "send" for r in results) else ""), ""]
    lines += ["## Setup (not pipeline work)", "", "| backend | customers | companies | generate s | load s |",
              "|---|---:|---:|---:|---:|"]
    for setup in setups:
        if setup.get("ok"):
            lines.append(f"| {setup['backend']} | {setup['size']:,} | {setup['companies']:,} | "
                         f"{setup['generate_s']:.1f} | {setup['load_s']:.1f} |")
        else:
            lines.append(f"| {setup['backend']} | {setup['size']:,} | failed: {setup.get('error', '')} | | |")
    with_send = any(r.stage == "send" for r in results)
    lines += ["", "## Runs", "",
              "| backend | customers | run | extracted | sent | total wall s | total CPU s | max peak RSS MiB | "
              "customers/s (extracted / wall) |" + (" send wall s |" if with_send else ""),
              "|---|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_send else "")]
    runs = _runs(results)
    for (backend, size, run), all_stages in runs.items():
        stages = [s for s in all_stages if s.stage != "send"]
        complete = all(s.ok for s in all_stages)
        wall = sum(s.wall_s for s in stages)
        cpu = sum(s.cpu_s for s in stages)
        rss = max((s.peak_rss_mb for s in stages), default=0)
        extracted = next((s.rows_out for s in stages if s.stage == "extract" and s.ok), 0)
        sent = next((s.rows_out for s in stages if s.stage == "detect_changes" and s.ok), 0)
        note = "" if complete else " (incomplete: " + next(s.error for s in all_stages if not s.ok)[:80] + ")"
        rate = f"{extracted / wall:,.0f}" if complete and wall else "-"
        send = sum(s.wall_s for s in all_stages if s.stage == "send")
        lines.append(f"| {backend} | {size:,} | {run}{note} | {extracted:,} | {sent:,} | {wall:.2f} | {cpu:.2f} | "
                     f"{rss:.0f} | {rate} |" + (f" {send:.2f} |" if with_send else ""))
    lines += ["", "## Stages", "",
              "| backend | customers | run | stage | rows in | rows out | wall s | CPU s | peak RSS MiB | rows/s |",
              "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.ok:
            rate = f"{r.rows_in / r.wall_s:,.0f}" if r.wall_s > 0 else "-"
            lines.append(f"| {r.backend} | {r.size:,} | {r.run} | {r.stage} | {r.rows_in:,} | {r.rows_out:,} | "
                         f"{r.wall_s:.2f} | {r.cpu_s:.2f} | {r.peak_rss_mb:.0f} | {rate} |")
        else:
            lines.append(f"| {r.backend} | {r.size:,} | {r.run} | {r.stage} | | | | | | {r.error[:100]} |")
    lines += ["", "## Chart: total wall seconds per run", "",
              "(matplotlib is not a project dependency, so the chart is text; one `#` is "
              "proportional to seconds, scaled per size.)", "", "```"]
    for size in sorted({key[1] for key in runs}):
        keyed = {k: v for k, v in runs.items() if k[1] == size}
        totals = {k: sum(s.wall_s for s in v if s.stage != "send") for k, v in keyed.items()}
        scale = max(totals.values(), default=1) or 1
        lines.append(f"{size:,} customers")
        for (backend, _, run), total in totals.items():
            lines.append(f"  {backend:8} {run:28} {total:8.2f} s {_bar(total, scale)}")
    lines += ["```", ""]
    return "\n".join(lines)


def _runs(results: list[StageResult]) -> dict:
    runs: dict[tuple, list[StageResult]] = {}
    for r in results:
        runs.setdefault((r.backend, r.size, r.run), []).append(r)
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated customer counts")
    parser.add_argument("--changes", default="0.001,0.01,0.1,1", help="fractions changed for incremental runs")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 customers, 1%% change, both backends, in-process: a smoke run of seconds")
    parser.add_argument("--send", action="store_true",
                        help="also run the real send against a local sandbox (API time included, reported apart)")
    parser.add_argument("--in-process", action="store_true",
                        help="run stages in this process (fast; peak RSS is then cumulative, not per stage)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", help="markdown file to write (default BENCHMARKS.md; --quick: bench/out/quick.md)")
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "out"), help="databases and staged files")
    parser.add_argument("--pg-admin-url", default=os.environ.get(PG_ADMIN_ENV, DEFAULT_PG_ADMIN),
                        help="PostgreSQL URL allowed to create databases")
    parser.add_argument("--render-from", metavar="JSON,...",
                        help="only re-render the report from raw results of earlier runs (e.g. one per size)")
    parser.add_argument("--append", metavar="MD,...", default="",
                        help="markdown files to append to the report (e.g. bench.baseline's output)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.changes, args.in_process = "2000", "0.01", True
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    args.changes = [float(c) for c in str(args.changes).split(",") if c]
    args.backends = [b.strip() for b in str(args.backends).split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if args.out is None:
        args.out = str(ROOT / "bench" / "out" / "quick.md") if args.quick else str(ROOT / "BENCHMARKS.md")
    return args


def _command_line(args) -> str:
    """The command that produced a report, as a reader would retype it."""
    return (f"python -m bench.run{' --quick' if args.quick else ''}{' --send' if args.send else ''}"
            f"{' --in-process' if args.in_process and not args.quick else ''} --sizes {','.join(map(str, args.sizes))} "
            f"--changes {','.join(f'{c:g}' for c in args.changes)} --backends {','.join(args.backends)}")


def render_from(args) -> int:
    """Merge raw result files of several runs into one report."""
    results, setups, commands, info = [], [], [], None
    for name in args.render_from.split(","):
        raw = json.loads(Path(name).read_text())
        info = info or raw["machine"]
        setups += raw["setups"]
        results += [StageResult(**r) for r in raw["results"]]
        commands.append(raw.get("command", name))
    args.command = "`; `".join(commands)
    args.sizes = sorted({r.size for r in results})
    text = render_markdown(results, setups, info, args)
    for name in filter(None, args.append.split(",")):
        # Appended reports become sections of this one.
        section = "\n" + Path(name).read_text(encoding="utf-8")
        text += section.replace("\n## ", "\n### ").replace("\n# ", "\n## ")
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out} from {len(commands)} result file(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage:
        return child_main(args.stage, json.loads(args.spec))
    if args.render_from:
        return render_from(args)
    harness = Harness(args)
    started = time.perf_counter()
    harness.run()
    info = machine_info(args.pg_admin_url if "postgres" in args.backends else None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    args.command = _command_line(args)
    out.write_text(render_markdown(harness.results, harness.setups, info, args), encoding="utf-8")
    raw = out.with_suffix(".json")
    raw.write_text(json.dumps({"machine": info, "command": args.command, "setups": harness.setups,
                               "results": [asdict(r) for r in harness.results]}, indent=1, default=str))
    failed = [r for r in harness.results if not r.ok] + [s for s in harness.setups if not s.get("ok")]
    harness.log(f"wrote {out} and {raw} in {time.perf_counter() - started:.0f} s; "
                f"{len(failed)} failed stage(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
