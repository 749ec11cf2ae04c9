"""Where a run's reports are written (locally, by the worker) and published (for the UI)."""

from __future__ import annotations

import logging
from pathlib import Path

from associate import config

log = logging.getLogger(__name__)


def reports_dir(run_id: str) -> Path:
    """Local folder of one run's reports (Data Docs, HTML summary, dry-run preview)."""
    from associate.staging import safe_name

    path = config.reports_dir() / safe_name(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish_reports(run_id: str) -> str | None:
    """Copy a run's local reports under ``reports_base`` when that is elsewhere; return the run's URL there.

    The api-server serves reports from ``reports_base`` (``associate.report_views``); by
    default that is the local reports folder itself and nothing is copied.
    """
    from airflow.sdk import ObjectStoragePath

    from associate.staging import safe_name

    local = reports_dir(run_id)
    base = config.reports_base()
    if base.rstrip("/") == "file://" + str(config.reports_dir()):
        return None
    target = ObjectStoragePath(base) / safe_name(run_id)
    copied = 0
    for path in sorted(local.rglob("*")):
        if path.is_file():
            destination = target.joinpath(*path.relative_to(local).parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
            copied += 1
    log.info("Published %d report files to %s", copied, target)
    return str(target)
