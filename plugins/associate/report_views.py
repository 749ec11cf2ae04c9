"""The runs' reports in the Airflow UI: a FastAPI app the api-server mounts (the plugin).

``/associate/reports/{dag_id}/{run_id}/report.html`` serves what the ``report`` task
published for a run (the HTML report, the Great Expectations Data Docs, the dry-run
preview) from the reports location (``[associate] reports_base``, an ``ObjectStoragePath``
URL every worker writes to, else the local reports folder), so the page opens wherever the
worker ran. Access is Airflow's: the caller must be allowed to read the DAG's runs (the
UI's session cookie or a bearer token).

``/associate/dry-run/associate_customers`` (the DAG's "Dry run" tab) starts a full dry run
with one click: it needs the right to trigger the DAG's runs.
"""

from __future__ import annotations

import html
import mimetypes
from urllib.parse import quote
from typing import TYPE_CHECKING

from associate import config
from associate.staging import safe_name

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

PREFIX = "/associate"
REPORT_FILE = "report.html"
DAG_ID = "associate_customers"
# What the one-click dry run sends nothing with: every row read, checked and built.
DRY_RUN_CONF = {"mode": "full", "dry_run": True}


def reports_root() -> ObjectStoragePath:
    """Where the published reports are: ``reports_base``, else the local reports folder."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(config.reports_base())


def run_file(run_id: str, path: str) -> ObjectStoragePath:
    """A file of one run's published reports; refuses paths that leave the run's folder."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or any(part == ".." for part in parts):
        raise ValueError(f"not a report path: {path!r}")
    target = reports_root() / safe_name(run_id)
    for part in parts:
        target = target / part
    return target


def _page(title: str, body: str, status: int = 200):
    from fastapi.responses import HTMLResponse

    return HTMLResponse(f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        f"<body style='font-family:sans-serif'>{body}</body>", status_code=status)


def create_app():
    """The FastAPI app of the reports (mounted by the plugin under ``/associate``)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi import Depends, FastAPI
    from fastapi.responses import Response

    app = FastAPI(title="associate reports")
    can_read_runs = [Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))]

    @app.get("/reports/{dag_id}/", dependencies=can_read_runs)
    def runs(dag_id: str):
        """Every run with a published report, newest first."""
        root = reports_root()
        folders = sorted((p for p in root.iterdir() if (p / REPORT_FILE).exists()),
                         key=lambda p: p.name, reverse=True) if root.exists() else []
        items = "".join(f"<li><a href='{PREFIX}/reports/{html.escape(dag_id)}/{html.escape(p.name)}/{REPORT_FILE}'>"
                        f"{html.escape(p.name)}</a></li>" for p in folders)
        return _page(f"{dag_id}: reports", f"<h1>Reports of {html.escape(dag_id)}</h1>"
                     f"<ul>{items or '<li>No report yet: each run publishes one at its end.</li>'}</ul>")

    @app.get("/reports/{dag_id}/{run_id}/{path:path}", dependencies=can_read_runs)
    def report_file(dag_id: str, run_id: str, path: str):
        """One file of a run's reports (the report, Data Docs pages and their assets, the preview)."""
        try:
            target = run_file(run_id, path or REPORT_FILE)
        except ValueError as exc:
            return _page("Not found", html.escape(str(exc)), status=404)
        if not target.is_file():
            return _page("No report yet", f"<h1>No report for run {html.escape(run_id)} yet</h1><p>The "
                         f"<code>report</code> task publishes it at the end of the run (dry runs included); "
                         f"a run that failed before it has none. Looked in {html.escape(str(target))}.</p>",
                         status=404)
        media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return Response(target.read_bytes(), media_type=media_type)

    @app.get("/dry-run/{dag_id}", dependencies=can_read_runs)
    def dry_run_page(dag_id: str):
        """The Dry run tab: one button that starts a full dry run of the DAG."""
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        if dag_id != DAG_ID:
            return _page("Dry run", f"<p>The dry run button is for <code>{DAG_ID}</code>.</p>", status=404)
        with create_session() as session:
            model = session.get(DagModel, dag_id)
            paused = bool(model and model.is_paused)
        warning = ("<p><b>The DAG is paused:</b> the run waits, queued, until it is unpaused (unpausing also "
                   "starts the schedule). While it is paused, <code>airflow dags test " + DAG_ID + " -c "
                   "'{\"mode\": \"full\", \"dry_run\": true}'</code> runs a dry run in your shell.</p>") if paused else ""
        return _page("Dry run", f"<h1>Dry run of {DAG_ID}</h1><p>Reads every row, checks it, builds the payloads "
                     "and reports what would be sent; sends nothing. The run's Report tab shows the result "
                     f"and the payload preview.</p>{warning}<form method='post'><button type='submit' "
                     "style='font-size:1.2em;padding:.4em 1.2em'>Start a dry run</button></form>")

    @app.post("/dry-run/{dag_id}",
              dependencies=[Depends(requires_access_dag(method="POST", access_entity=DagAccessEntity.RUN))])
    def start_dry_run(dag_id: str, user=Depends(get_user)):  # noqa: B008 - FastAPI's dependency form
        """Trigger a full dry run (no logical date) and open its page in the UI."""
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.utils.types import DagRunTriggeredByType
        from fastapi.responses import RedirectResponse

        if dag_id != DAG_ID:
            return _page("Dry run", f"<p>The dry run button is for <code>{DAG_ID}</code>.</p>", status=404)
        run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.UI, conf=dict(DRY_RUN_CONF),
                          logical_date=None, triggering_user_name=user.get_name())
        return RedirectResponse(f"/dags/{dag_id}/runs/{quote(run.run_id, safe='')}", status_code=303)

    return app
