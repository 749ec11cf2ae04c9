"""Airflow plugin: each run's report in the UI (a "Report" tab on the run, a menu entry) and a one-click dry run."""

from __future__ import annotations

from functools import cache

from airflow.plugins_manager import AirflowPlugin

from associate.report_views import PREFIX, REPORT_FILE, create_app


class _ReportApps:
    """The plugin's ``fastapi_apps``, built on first read, whether read from the class or an instance."""

    @staticmethod
    @cache
    def _apps() -> list[dict]:
        return [{"app": create_app(), "url_prefix": PREFIX, "name": "associate reports"}]

    def __get__(self, instance, owner) -> list[dict]:
        return self._apps()


class AssociateReportsPlugin(AirflowPlugin):
    """Serves the reports the ``report`` task publishes, and links them from the UI."""

    name = "associate_reports"
    external_views = [
        {"name": "Report", "href": f"{PREFIX}/reports/{{DAG_ID}}/{{RUN_ID}}/{REPORT_FILE}",
         "destination": "dag_run", "url_route": "associate_report"},
        {"name": "Dry run", "href": f"{PREFIX}/dry-run/{{DAG_ID}}", "destination": "dag",
         "url_route": "associate_dry_run"},
        {"name": "Associate reports", "href": f"{PREFIX}/reports/associate_customers/",
         "destination": "nav", "url_route": "associate_reports", "category": "browse"},
    ]

    # Built when asked for (the api-server mounts it, `airflow plugins` lists it), not when the
    # module is imported: every process that deserializes a DAG loads the plugins (operator extra
    # links, macros): each task process, the scheduler, `airflow dags test`. Building the app
    # imports the api-server's modules (FastAPI, its security and models): 1.6 s of CPU
    # in each of them for an app only the api-server serves.
    fastapi_apps = _ReportApps()
