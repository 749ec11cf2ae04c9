"""`make demo`: a sample warehouse, the sandbox, one real DAG run, and its summary.

Run it twice: the second run finds nothing changed and sends nothing.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

DEMO = ROOT / "demo"
WAREHOUSE = DEMO / "warehouse.db"
SANDBOX_DB = DEMO / "sandbox.db"
DEMO_CUSTOMERS = 400
TILL_LOGIN, TILL_PASSWORD = "demo.till", "demo-till-password"


def build_warehouse() -> None:
    """Generate the sample warehouse once; later runs reuse it so nothing changes."""
    from bench.generate import generate_warehouse, load_sqlite

    if WAREHOUSE.exists():
        print(f"Sample warehouse: {WAREHOUSE} (kept from an earlier run)")
        return
    companies, customers = generate_warehouse(DEMO_CUSTOMERS, seed=11, bad_ratio=0.05)
    load_sqlite(WAREHOUSE, companies, customers)
    print(f"Sample warehouse: {WAREHOUSE} ({len(companies)} companies, {len(customers)} customers)")


def airflow_env(sandbox_url: str) -> dict[str, str]:
    """Environment of the Airflow CLI: home in the checkout, connections as AIRFLOW_CONN_*."""
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(ROOT / ".airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT / "plugins"),
        "ASSOCIATE_STAGING_BASE": "file://" + str(DEMO / "staging"),
        "ASSOCIATE_REPORTS_DIR": str(DEMO / "reports"),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(WAREHOUSE)}),
        "AIRFLOW_CONN_CAPILLARY_DEFAULT": json.dumps({
            "conn_type": "http", "host": sandbox_url, "login": TILL_LOGIN, "password": TILL_PASSWORD,
            "extra": {"rate_limit_rpm": 6000},
        }),
    })
    return env


def airflow(env: dict[str, str], *args: str, log: Path | None = None) -> int:
    """Run the Airflow CLI of this venv; its output goes to ``log`` when given."""
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    if log is None:
        return subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT).returncode
    with log.open("w") as out:
        return subprocess.run(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode


def summary_from_log(log: Path) -> str:
    """The run summary the report task logged."""
    lines = log.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if "Run summary" in line), None)
    if start is None:
        return ""
    out = []
    for line in lines[start:]:  # from the "Run summary" table's title
        if "HTML report" in line or "[info" in line or "[warn" in line:
            break
        out.append(re.sub(r"\s+\[associate\.\w+\] loc=\S+$", "", line))
    return "\n".join(out)


def run_id_from_log(log: Path) -> str | None:
    """The run id ``airflow dags test`` reports when the run finishes."""
    match = re.search(r"DagRun Finished: .*?run_id=([^,]+),", log.read_text(errors="replace"))
    return match.group(1) if match else None


def main() -> int:
    from associate.sandbox.launcher import SandboxProcess

    DEMO.mkdir(exist_ok=True)
    build_warehouse()
    with SandboxProcess(SANDBOX_DB, credentials=[(TILL_LOGIN, TILL_PASSWORD)],
                        log_path=DEMO / "sandbox.log") as sandbox:
        print(f"Sandbox: {sandbox.url} (state in {SANDBOX_DB})")
        env = airflow_env(sandbox.url)
        if airflow(env, "db", "migrate", log=DEMO / "airflow-db.log") != 0:
            print(f"airflow db migrate failed: see {DEMO / 'airflow-db.log'}")
            return 1
        log = DEMO / "last_run.log"
        print("Running: airflow dags test associate_customers ...")
        # A manual run covers the latest complete interval; the demo syncs the whole sample.
        rc = airflow(env, "dags", "test", "associate_customers", "-c", json.dumps({"mode": "full"}), log=log)
        stats = sandbox.stats()
    print(summary_from_log(log) or f"(no summary found; see {log})")
    print()
    print(f"Task log:        {log}")
    report = re.search(r"HTML report: (\S+)", log.read_text(errors="replace"))
    print(f"Report:          {report.group(1) if report else DEMO / 'reports'} (Data Docs linked from it)")
    print(f"Warehouse:       {WAREHOUSE} (tables associate_sync_results, associate_warnings,")
    print("                 associate_quarantine, associate_sync_state)")
    print(f"Sandbox counters: {json.dumps({k: stats.get(k) for k in ('customers', 'companies', 'associations')})}")
    if rc != 0:
        print(f"The DAG run failed (exit {rc}); see {log}")
        return rc
    run_id = run_id_from_log(log)
    with sqlite3.connect(WAREHOUSE) as db:
        rows = db.execute(
            "SELECT entity, status, count(*) FROM associate_sync_results WHERE run_id = ? "
            "GROUP BY entity, status ORDER BY entity, status",
            (run_id,),
        ).fetchall()
    print(f"This run ({run_id}) sent:", ", ".join(f"{e} {s}={n}" for e, s, n in rows) or "nothing (no changes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
