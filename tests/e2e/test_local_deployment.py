"""`make airflow` as a user runs it: LocalExecutor on a SQLite metadata DB, the sandbox, a sample warehouse.

The deployment is started through scripts/local_airflow.py in a temp directory on free
ports. README's order: a dry run from the DAG's "Dry run" tab (its report opens from the
plugin), then a full run triggered through the REST API (the CLI's writes meet "database is locked"
on SQLite while the scheduler works), and stopping it leaves no process behind.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from urllib.parse import quote, unquote

import pytest
import requests

from dag_support import DAG_ID

from deployment_support import DeploymentError, alive, deployment_processes, running_deployment

pytestmark = pytest.mark.slow


def test_make_airflow_runs_the_dag_and_stops_cleanly(tmp_path):
    warehouse = tmp_path / "state" / "warehouse.db"
    # Only the triggered run: unpausing would otherwise start the latest day's scheduled run too.
    with running_deployment(tmp_path / "state", sample_customers=40,
                            extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}) as deployment:
        # The banner's login works, and a second start is refused while this one runs.
        assert deployment.api("GET", "/api/v2/pools/capillary_api").json()["slots"] == 2
        assert deployment.api("GET", "/api/v2/pools/warehouse_writer").json()["slots"] == 1
        with pytest.raises(DeploymentError, match="already running"):
            deployment.start(quiet=True)
        # The env file points the airflow CLI at this deployment.
        cli = subprocess.run(["bash", "-c", f"source {deployment.env_file} && airflow pools get capillary_api "
                              "-o json"], capture_output=True, text=True, timeout=180, env={"PATH": "/usr/bin:/bin"})
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert json.loads(cli.stdout)[0]["slots"] == "2"

        deployment.wait_for_dag()
        # README's order: a dry run first (the DAG's one-click "Dry run" tab), then the full sync.
        click = deployment.api("POST", f"/associate/dry-run/{DAG_ID}", allow_redirects=False)
        assert click.status_code == 303, click.text
        dry_run_id = unquote(click.headers["location"].rsplit("/", 1)[1])
        deployment.unpause()
        assert deployment.wait_for_run(dry_run_id, timeout=400) == "success", deployment.log_tails()
        assert deployment.sandbox_stats()["customers"] == 0, "a dry run sent customers"
        # Its report opens from the run's Report tab (the plugin serves it), for a logged-in user only.
        report = f"/associate/reports/{DAG_ID}/{quote(dry_run_id, safe='')}/report.html"
        page = deployment.api("GET", report)
        assert page.status_code == 200 and dry_run_id in page.text and "payload preview" in page.text, page.text[:500]
        preview = deployment.api("GET", report.replace("report.html", "payload_preview.json"))
        assert preview.status_code == 200 and preview.json()["all_payloads"], preview.text[:300]
        assert requests.get(deployment.api_url + report, timeout=30).status_code in (401, 403)

        run_id = deployment.trigger({"mode": "full"})
        state = deployment.wait_for_run(run_id, timeout=400)
        tasks = {ti["task_id"]: ti["state"] for ti in deployment.task_instances(run_id)}
        assert state == "success", f"{tasks}\n{deployment.log_tails()}"
        processes = deployment_processes(deployment)
        received = deployment.sandbox_stats()["customers"]
        stopped = deployment.stop(quiet=True)

    assert set(stopped) == {"api-server", "scheduler", "dag-processor", "sandbox"}
    assert not alive(processes), f"processes left after stop: {sorted(alive(processes))}"
    assert not deployment.running()
    with sqlite3.connect(warehouse) as db:
        sent = dict(db.execute("SELECT status, count(*) FROM associate_sync_results WHERE run_id = ? "
                               "AND entity = 'customer' GROUP BY status", (run_id,)).fetchall())
        synced = db.execute("SELECT count(*) FROM associate_sync_state WHERE entity = 'customer' "
                            "AND last_status IN ('success', 'warning')").fetchone()[0]
    assert sent.get("success", 0) + sent.get("warning", 0) == synced == received >= 30, (sent, synced, received)
