"""Deployment settings of the pipeline, read in one place.

Each setting is ``[associate] <name>`` in ``airflow.cfg`` (or ``AIRFLOW__ASSOCIATE__<NAME>``);
the plain ``ASSOCIATE_<NAME>`` environment variable is the fallback, for processes that run
without an Airflow configuration (benchmarks, the demo script). README's "Settings" table
lists them; ``SETTINGS`` below is that table's source.
"""

from __future__ import annotations

import os
from pathlib import Path

SECTION = "associate"

# name -> what it is, and the default README states.
SETTINGS: dict[str, tuple[str, str]] = {
    "staging_base": ("staged Parquet between tasks; any ObjectStoragePath URL (s3://, gs://, file://)",
                     "file://$AIRFLOW_HOME/associate/staging"),
    "reports_dir": ("run reports, Data Docs and the dry-run preview, as the worker writes them",
                    "$AIRFLOW_HOME/associate/reports"),
    "reports_base": ("where reports are published for the UI: an ObjectStoragePath URL every worker and "
                     "the api-server reach (s3://, gs://, file://)", "file://<reports_dir>"),
    "sql_dir": ("the extract SQL files", "<dags_folder>/sql"),
    "expectations_dir": ("the Great Expectations suites (JSON)", "<dags_folder>/expectations"),
    "payload_processes": ("processes that build payloads", "usable CPUs, at most 4"),
    "alert_to": ("comma-separated recipients of failure alerts (none: no mail)", "(none)"),
    "alert_smtp_conn_id": ("the Airflow SMTP connection alerts go through (its extra from_email is the sender)",
                           "smtp_default"),
    "rate_limit_redis_conn_id": ("Airflow `redis` connection through which every process and worker shares one "
                                 "rate budget per Capillary key", "none: one budget per host (LocalExecutor) "
                                 "or divided (other executors)"),
    "approval_timeout_hours": ("hours a send above the run's `approval_threshold` waits for an answer before it "
                               "counts as rejected", "24"),
    "rate_limit_sharers": ("without Redis on a multi-host executor: processes that may send with one key at once; "
                           "each gets `rate_limit_rpm` / this", "2 (the `capillary_api` pool's slots)"),
}

# The DAG file's folder in this repository: the default when Airflow names no dags folder.
_PACKAGED_DAGS = Path(__file__).resolve().parents[2] / "dags"


def env_name(name: str) -> str:
    """The fallback environment variable of a setting."""
    return f"ASSOCIATE_{name.upper()}"


def get(name: str) -> str | None:
    """A setting's configured text, or None where nothing sets it."""
    if name not in SETTINGS:
        raise KeyError(f"unknown [associate] setting {name!r}; known: {', '.join(SETTINGS)}")
    from airflow.configuration import conf

    value = conf.get(SECTION, name, fallback=None)
    if value in (None, ""):
        value = os.environ.get(env_name(name))
    return value or None


def airflow_home() -> Path:
    """``$AIRFLOW_HOME``, as Airflow resolves it."""
    from airflow.configuration import AIRFLOW_HOME

    return Path(os.environ.get("AIRFLOW_HOME") or AIRFLOW_HOME).expanduser().resolve()


def dags_folder() -> Path:
    """The deployment's DAG folder, else this repository's ``dags/``."""
    from airflow.configuration import conf

    configured = conf.get("core", "dags_folder", fallback=None)
    if configured and Path(configured).expanduser().is_dir():
        return Path(configured).expanduser()
    return _PACKAGED_DAGS


def staging_base() -> str:
    """The URL under which tasks stage their files."""
    return get("staging_base") or "file://" + str(airflow_home() / "associate" / "staging")


def reports_dir() -> Path:
    """The local folder of run reports."""
    configured = get("reports_dir")
    return Path(configured).expanduser().resolve() if configured else airflow_home() / "associate" / "reports"


def reports_base() -> str:
    """The URL under which reports are published for the UI (the local reports folder by default)."""
    return get("reports_base") or "file://" + str(reports_dir())


def _shipped_dir(name: str, folder: str) -> Path:
    configured = get(name)
    if configured:
        return Path(configured).expanduser()
    deployed = dags_folder() / folder
    return deployed if deployed.is_dir() else _PACKAGED_DAGS / folder


def sql_dir() -> Path:
    """The folder of the extract SQL files."""
    return _shipped_dir("sql_dir", "sql")


def expectations_dir() -> Path:
    """The folder of the expectation suites."""
    return _shipped_dir("expectations_dir", "expectations")


def payload_processes() -> int | None:
    """The configured number of payload-building processes, or None for the default."""
    configured = get("payload_processes")
    if configured is None:
        return None
    try:
        return int(configured)
    except ValueError:
        from associate.exceptions import ConfigurationError

        raise ConfigurationError(
            f"[associate] payload_processes must be a whole number, not {configured!r}") from None


def rate_limit_redis_conn_id() -> str | None:
    """The Airflow connection id of the Redis that shares rate budgets, or None."""
    configured = get("rate_limit_redis_conn_id")
    return configured.strip() if configured and configured.strip() else None


def rate_limit_sharers() -> int:
    """How many processes divide one key's budget when no shared store is used (default 2)."""
    configured = get("rate_limit_sharers")
    if configured is None:
        return 2
    try:
        sharers = int(configured)
    except ValueError:
        sharers = 0
    if sharers < 1:
        from associate.exceptions import ConfigurationError

        raise ConfigurationError(
            f"[associate] rate_limit_sharers must be a whole number of at least 1, not {configured!r}")
    return sharers
