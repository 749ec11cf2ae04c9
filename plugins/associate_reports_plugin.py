"""Airflow plugin: each run's report in the UI (a "Report" tab on the run, a menu entry) and a one-click dry run."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from associate.report_views import PREFIX, REPORT_FILE, create_app


class AssociateReportsPlugin(AirflowPlugin):
    """Serves the reports the ``report`` task publishes, and links them from the UI."""

    name = "associate_reports"
    fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "associate reports"}]
    external_views = [
        {"name": "Report", "href": f"{PREFIX}/reports/{{DAG_ID}}/{{RUN_ID}}/{REPORT_FILE}",
         "destination": "dag_run", "url_route": "associate_report"},
        {"name": "Dry run", "href": f"{PREFIX}/dry-run/{{DAG_ID}}", "destination": "dag",
         "url_route": "associate_dry_run"},
        {"name": "Associate reports", "href": f"{PREFIX}/reports/associate_customers/",
         "destination": "nav", "url_route": "associate_reports", "category": "browse"},
    ]
