"""Helpers of the reliability tests: DAG runs driven mid-flight, Capillary audits, secret scans, results.

The DAG is run with the helpers of tests/dag_support.py; what is added here is what
the reliability tests need on top: a run the test can interrupt, an audit of the sandbox
through its public lookups, a scan of everything a run leaves behind, and a record of what
each scenario did (rendered into RELIABILITY.md by scripts/reliability_report.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from dag_support import AIRFLOW, DAG_ID, ROOT, TILL, DagRun, airflow_env, finished_run, migrate

# The test audits Capillary with a credential of its own, so its lookups never spend the
# rate budget of the till the DAG uses.
AUDITOR = ("reliability.auditor", "auditor-password-7f3a")
RESULTS_ENV = "ASSOCIATE_RELIABILITY_RESULTS"
DEFAULT_RESULTS = ROOT / ".pytest_cache" / "reliability" / "results.jsonl"
# A JWT always starts with base64url('{"'), i.e. "eyJ".
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")


# --- results of the reliability tests --------------------------------------------------------


def results_path() -> Path:
    """Where the tests append their records (one JSON object per line)."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


@pytest.fixture
def record(request) -> Callable[..., None]:
    """``record(section, name, expected=..., observed=...)`` appends what a test saw."""

    def write(section: str, name: str, **facts: Any) -> None:
        path = results_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"section": section, "name": name, "nodeid": request.node.nodeid, "at": time.time(), **facts}
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, default=str, ensure_ascii=False) + "\n")

    return write


# --- Airflow --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def reliability_home(tmp_path_factory) -> Path:
    """One migrated Airflow home for every reliability DAG run of the session."""
    home = tmp_path_factory.mktemp("reliability_airflow")
    migrate(airflow_env(home, {"conn_type": "sqlite", "host": str(home / "unused.db")}, "http://127.0.0.1:9"))
    return home


def capillary_conn(sandbox_url: str, *, oauth: tuple[str, str] | None = None, **extra: Any) -> str:
    """AIRFLOW_CONN_CAPILLARY_DEFAULT for the sandbox: the till's Basic auth (or OAuth) and fast retries."""
    extras = {"rate_limit_rpm": 60000, "backoff_base": 0.05, "backoff_max": 0.5, **extra}
    conn: dict[str, Any] = {"conn_type": "http", "host": sandbox_url, "extra": extras}
    if oauth:
        extras.update(oauth_key=oauth[0], oauth_secret=oauth[1])
    else:
        conn.update(login=TILL[0], password=TILL[1])
    return json.dumps(conn)


def dag_env(home: Path, warehouse: Warehouse, sandbox_url: str, **capillary: Any) -> dict[str, str]:
    """Environment of one reliability run: dag_support's env with our Capillary connection."""
    return airflow_env(home, warehouse.conn, sandbox_url,
                       AIRFLOW_CONN_CAPILLARY_DEFAULT=capillary_conn(sandbox_url, **capillary))


class RunningDag:
    """An ``airflow dags test`` in its own process group, so a test can act while it runs."""

    def __init__(self, env: dict[str, str], conf: dict | None, log_path: Path, logical_date: str | None = None):
        cmd = [AIRFLOW, "dags", "test", DAG_ID]
        if logical_date:
            cmd.append(logical_date)
        if conf is not None:
            cmd += ["-c", json.dumps(conf)]
        self.log_path = log_path
        self.staging = Path(env["ASSOCIATE_STAGING_BASE"].removeprefix("file://"))
        self._log = log_path.open("w")
        # Unbuffered, so the test sees each task start the moment it is logged.
        self.process = subprocess.Popen(cmd, env={**env, "PYTHONUNBUFFERED": "1"}, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def batch_parts(self) -> int:
        """Batch outcome parts staged so far (by any run of this staging folder)."""
        return sum(1 for _ in self.staging.glob("*/outcomes/*.parts/batch-*.parquet"))

    def log(self) -> str:
        """What the run printed so far."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole run (the CLI and every task it runs), as a crashed worker."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def wait(self, timeout: float = 400) -> DagRun:
        """Wait for the run to end; the finished run as ``dag_support.run_dag`` reports it."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._log.close()
        return finished_run(code, self.log())


def run_dag_logged(env: dict[str, str], conf: dict, log_path: Path) -> DagRun:
    """One uninterrupted run whose output is kept in ``log_path`` for the secret scan."""
    return RunningDag(env, conf, log_path).wait()


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, poll: float = 0.02) -> Any:
    """Poll ``condition`` until it answers something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the warehouse ----------------------------------------------------------------------------


@dataclass
class Warehouse:
    """A SQLite file or a PostgreSQL database the DAG reads and writes, queried by the test."""

    conn: dict | str
    sqlite_path: Path | None = None
    pg_url: str | None = None

    @classmethod
    def sqlite(cls, path: Path, companies, customers) -> Warehouse:
        from bench.generate import load_sqlite

        load_sqlite(path, companies, customers)
        return cls({"conn_type": "sqlite", "host": str(path)}, sqlite_path=path)

    @classmethod
    def postgres(cls, url: str, companies, customers, *, conn_url: str | None = None) -> Warehouse:
        from bench.generate import load_postgres

        load_postgres(url, companies, customers)
        return cls(conn_url or url, pg_url=url)

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        """Rows of a query (``?`` placeholders on both databases)."""
        if self.sqlite_path is not None:
            with sqlite3.connect(self.sqlite_path) as db:
                return db.execute(sql, args).fetchall()
        import psycopg2

        with psycopg2.connect(self.pg_url) as db, db.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []

    def quarantined_customers(self) -> set[str]:
        return {k for (k,) in self.rows("SELECT DISTINCT entity_key FROM associate_quarantine WHERE entity = 'customer'")}


# --- auditing Capillary ----------------------------------------------------------------------


def auditor_header() -> dict[str, str]:
    from associate.capillary.settings import basic_authorization

    return {"Authorization": basic_authorization(*AUDITOR)}


def primary_identifiers(row) -> list[tuple[str, str]]:
    """(identifierName, normalised value) of a warehouse row's primary identifiers."""
    import pandas as pd

    from associate.identifiers import normalize_mobile
    from associate.payload import normalize_email

    out = []
    for column, name, norm in (("mobile", "mobile", normalize_mobile), ("email", "email", normalize_email),
                               ("external_id", "externalId", lambda v: str(v).strip() or None)):
        value = row[column]
        if value is not None and not pd.isna(value) and norm(value):
            out.append((name, norm(value)))
    return out


def lookup_details(session: requests.Session, url: str, name: str, value: str) -> dict | None:
    """The customer Capillary holds under one identifier (``/lookup/customerDetails``), or None."""
    resp = session.get(f"{url}/v2/customers/lookup/customerDetails",
                       params={"source": "ALL", "identifierName": name, "identifierValue": value}, timeout=30)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json()


@dataclass
class Audit:
    """What Capillary and the sync tables say about the valid customers after a scenario."""

    valid: int
    in_capillary: int = 0
    sandbox_customers: int = 0
    problems: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"valid_customers": self.valid, "found_once_in_capillary": self.in_capillary,
                "customers_in_sandbox": self.sandbox_customers, "problems": self.problems[:10]}


def audit(sandbox, warehouse: Warehouse, customers, valid_keys: set[str]) -> Audit:
    """Every valid customer exists exactly once in Capillary with the right company, role and parent,
    and associate_sync_state / associate_sync_results agree with Capillary."""
    report = Audit(valid=len(valid_keys))
    session = requests.Session()
    session.headers.update(auditor_header())
    by_key = customers.set_index("customer_key")
    details: dict[str, dict] = {}
    for key in sorted(valid_keys):
        found = {}
        for name, value in primary_identifiers(by_key.loc[key]):
            body = lookup_details(session, sandbox.url, name, value)
            found[name] = body["id"] if body else None
            if body:
                details[key] = body
        ids = set(found.values())
        if ids == {None} or not found:
            report.problems.append(f"{key}: not in Capillary")
        elif len(ids) != 1:
            report.problems.append(f"{key}: its identifiers name different customers {found}")
        else:
            report.ids[key] = ids.pop()
    report.in_capillary = len(report.ids)
    for key, cid in report.ids.items():
        row, assoc = by_key.loc[key], details[key].get("associationDetails") or {}
        company = row["company_external_id"]
        if isinstance(company, str):
            if (assoc.get("fleetCompany") or {}).get("externalId") != company:
                report.problems.append(f"{key}: company {assoc.get('fleetCompany')} instead of {company}")
            if assoc.get("roleCode") != row["role_code"]:
                report.problems.append(f"{key}: role {assoc.get('roleCode')} instead of {row['role_code']}")
            parent = row["parent_customer_key"]
            expected_parent = report.ids.get(parent) if isinstance(parent, str) else None
            if assoc.get("parentCustomerId") != expected_parent:
                report.problems.append(f"{key}: parent id {assoc.get('parentCustomerId')} instead of {expected_parent}")
    # Nothing but the valid customers was registered (a duplicate would be an extra customer).
    report.sandbox_customers = sandbox.stats()["customers"]
    if report.sandbox_customers != len(valid_keys):
        report.problems.append(f"Capillary holds {report.sandbox_customers} customers for {len(valid_keys)} valid rows")

    state = {k: (s, cid) for k, s, cid in warehouse.rows(
        "SELECT entity_key, last_status, capillary_id FROM associate_sync_state WHERE entity = 'customer'")}
    for key in sorted(valid_keys):
        status, cid = state.get(key, (None, None))
        if status not in ("success", "warning") or cid != report.ids.get(key):
            report.problems.append(f"{key}: sync state ({status}, {cid}) but Capillary id {report.ids.get(key)}")
    extra_state = set(state) - valid_keys
    if extra_state:
        report.problems.append(f"sync state holds customers that were never valid: {sorted(extra_state)[:5]}")
    results = warehouse.rows(
        "SELECT run_id, entity_key, status, capillary_id FROM associate_sync_results WHERE entity = 'customer'")
    seen: set[tuple[str, str]] = set()
    for run_id, key, status, cid in results:
        if (run_id, key) in seen:
            report.problems.append(f"{key}: two result rows in run {run_id}")
        seen.add((run_id, key))
        if status in ("success", "warning") and cid != report.ids.get(key):
            report.problems.append(f"{key}: result of {run_id} says id {cid}, Capillary {report.ids.get(key)}")
    return report


def results_cover(warehouse: Warehouse, valid_keys: set[str]) -> set[str]:
    """Valid customers that have no successful row in associate_sync_results of any run."""
    ok = {k for (k,) in warehouse.rows(
        "SELECT DISTINCT entity_key FROM associate_sync_results WHERE entity = 'customer' "
        "AND status IN ('success', 'warning')")}
    return valid_keys - ok


# --- scanning what a run leaves behind -----------------------------------------------------


def _parquet_text(path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid:  # e.g. a file cut short by a killed writer: its raw bytes are scanned
        return path.read_bytes().decode(errors="replace")
    cells = []
    for column in table.columns:
        if str(column.type) in ("string", "large_string"):
            cells += [v for v in column.to_pylist() if v]
    return "\n".join(cells)


def run_artifacts(home: Path, run_logs: list[Path] = ()) -> dict[str, str]:
    """{where: text} of everything a run leaves: CLI output, task logs, XCom, reports, staged files."""
    texts: dict[str, str] = {}
    for path in run_logs:
        texts[f"dags test output {path.name}"] = path.read_text(errors="replace")
    for path in sorted((home / "logs").rglob("*")) if (home / "logs").exists() else []:
        if path.is_file():
            texts[f"task log {path.relative_to(home)}"] = path.read_text(errors="replace")
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT dag_id, task_id, run_id, key, value FROM xcom").fetchall()
    texts["xcom table"] = "\n".join(
        " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row) for row in rows)
    for base, label in ((home / "reports", "report"), (home / "staging", "staged file")):
        for path in sorted(base.rglob("*")) if base.exists() else []:
            if not path.is_file():
                continue
            text = _parquet_text(path) if path.suffix == ".parquet" else path.read_text(errors="replace")
            texts[f"{label} {path.relative_to(home)}"] = text
    return texts


def find_secrets(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    """'<secret name> in <where>' for every secret value (or JWT) found in the texts."""
    hits = []
    for where, text in texts.items():
        for name, value in secrets.items():
            if value and value in text:
                hits.append(f"{name} in {where}")
        match = JWT_RE.search(text)
        if match:
            hits.append(f"a JWT ({match.group(0)[:12]}...) in {where}")
    return hits


def find_pii(texts: dict[str, str], customers) -> list[str]:
    """'<kind> of <key> in <where>' for every raw mobile or email of the input found in the texts."""
    import pandas as pd

    needles = []
    for row in customers.itertuples(index=False):
        if isinstance(row.mobile, str) and len(re.sub(r"\D", "", row.mobile)) >= 8:
            needles.append(("mobile", row.customer_key, re.sub(r"\D", "", row.mobile)))
        if isinstance(row.email, str) and "@" in row.email and not pd.isna(row.email):
            needles.append(("email", row.customer_key, row.email.strip()))
    hits = []
    for where, text in texts.items():
        lowered = text.lower()
        for kind, key, value in needles:
            if (value.lower() in lowered) if kind == "email" else (value in text):
                hits.append(f"raw {kind} of {key} in {where}")
    return hits


# --- the pipeline in process ----------------------------------------------------------------------


def input_frames(companies: list[dict], customers: list[dict]):
    """Row dicts as the two canonical frames, every value kept as given (object columns)."""
    import pandas as pd

    from associate import tables

    def frame(rows, columns):
        return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in columns})

    return frame(companies, tables.COMPANY_COLUMNS), frame(customers, tables.CUSTOMER_COLUMNS)


def write_input_tables(path: Path, companies, customers) -> None:
    """(Re)create the input tables WITHOUT constraints, so duplicate keys and odd types can be stored."""
    import pandas as pd

    from associate import tables

    def cell(value):
        if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        return value.item() if hasattr(value, "item") else value

    with sqlite3.connect(path) as db:
        for table, frame, columns in (("fleet_companies", companies, tables.COMPANY_COLUMNS),
                                      ("customers", customers, tables.CUSTOMER_COLUMNS)):
            db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
            rows = [[cell(v) for v in row] for row in frame[list(columns)].itertuples(index=False)]
            db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", rows)


@dataclass
class PipelineRun:
    """Per input row, what one in-process run of the task functions did."""

    run_id: str
    quarantine: dict[tuple[str, str], list[tuple[str, str]]]
    results: dict[str, tuple[str, int | None, int | None, str | None]]
    valid_keys: set[str]
    plan: dict
    warnings: dict[str, set[int]] = field(default_factory=dict)
    company_results: dict[str, tuple[str, int | None, int | None, str | None]] = field(default_factory=dict)


def run_pipeline(warehouse_path: Path, run_id: str, *, batch_size: int = 10) -> PipelineRun:
    """extract -> validate -> ensure_companies -> detect_changes -> build_batches -> send -> write_back, the DAG's task
    functions called in this process (connections from AIRFLOW_CONN_* in the environment)."""
    from associate import staging, tasks
    from associate.hook import CapillaryHook
    from associate.sending import send_payload_chunk

    conns = {"warehouse_conn_id": "warehouse_default"}
    extracted = tasks.extract(run_id=run_id, mode="full", **conns)
    validated = tasks.validate(extracted=extracted, capillary_conn_id="capillary_default", run_id=run_id,
                               max_quarantine_ratio=1.0, **conns)
    companies = tasks.ensure_companies(validated=validated, capillary_conn_id="capillary_default",
                                       run_id=run_id, dry_run=False, **conns)
    changes = tasks.detect_changes(validated=validated, company_outcomes=companies, run_id=run_id,
                                   customer_keys=None, dry_run=False, batch_size=batch_size, **conns)
    chunks = tasks.build_batches(changes=changes, run_id=run_id, batch_size=batch_size)
    hook = CapillaryHook(capillary_conn_id="capillary_default")
    try:
        outcomes = [send_payload_chunk(hook, c["payload_uri"], c["outcome_uri"], run_id=run_id, rows=c.get("rows"),
                                       batch_size=c.get("batch_size"), **conns)
                    for c in chunks]
    finally:
        hook.close()
    tasks.write_back(run_id=run_id, company_outcomes=companies, customer_outcomes=outcomes, **conns)

    with sqlite3.connect(warehouse_path) as db:
        quarantine: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for entity, key, check, reason in db.execute(
                'SELECT entity, entity_key, "check", reason FROM associate_quarantine WHERE run_id = ?', (run_id,)):
            quarantine.setdefault((entity, key), []).append((check, reason))
        results = {key: (status, cid, code, message) for key, status, cid, code, message in db.execute(
            "SELECT entity_key, status, capillary_id, error_code, error_message FROM associate_sync_results "
            "WHERE run_id = ? AND entity = 'customer'", (run_id,))}
        company_results = {key: (status, cid, code, message) for key, status, cid, code, message in db.execute(
            "SELECT entity_key, status, capillary_id, error_code, error_message FROM associate_sync_results "
            "WHERE run_id = ? AND entity = 'company'", (run_id,))}
        warnings: dict[str, set[int]] = {}
        for key, code in db.execute("SELECT entity_key, code FROM associate_warnings WHERE run_id = ? "
                                    "AND entity = 'customer'", (run_id,)):
            warnings.setdefault(key, set()).add(int(code))
    valid = set(staging.read_frame(validated["customers"])["customer_key"])
    plan = staging.read_json(staging.run_path(run_id, "plan.json"))
    return PipelineRun(run_id, quarantine, results, valid, plan, warnings, company_results)


@contextlib.contextmanager
def pipeline_environment(tmp: Path, sandbox_url: str, warehouse_path: Path):
    """Connections and staging of in-process pipeline runs (restored afterwards)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_CONN_WAREHOUSE_DEFAULT", json.dumps({"conn_type": "sqlite", "host": str(warehouse_path)}))
    mp.setenv("AIRFLOW_CONN_CAPILLARY_DEFAULT", capillary_conn(sandbox_url))
    mp.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp / "staging"))
    mp.setenv("ASSOCIATE_REPORTS_DIR", str(tmp / "reports"))
    try:
        yield
    finally:
        mp.undo()
