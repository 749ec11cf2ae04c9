"""Alerts: a mail through the smtp provider's notifier when a task of the DAG fails for good.

Recipients come from ``[associate] alert_to``; the mail goes through the Airflow SMTP
connection ``[associate] alert_smtp_conn_id`` (``smtp_default``), whose extra
``from_email`` names the sender. No recipients: no notifier, and the log of a failed task
is the only trace. A run whose share of failed customers passes ``max_failed_ratio``
fails its ``check_failures`` task after the write-back and the report, so this alert
fires for it too, naming the run, its counts and its report.
"""

from __future__ import annotations

from associate import config

SUBJECT = "[associate] {{ dag.dag_id }}: task {{ ti.task_id }} failed in run {{ run_id }}"
BODY = """
<p>Task <b>{{ ti.task_id }}</b> of <b>{{ dag.dag_id }}</b> failed in run <b>{{ run_id }}</b>
(try {{ ti.try_number }}).</p>
<pre>{{ exception }}</pre>
<p>Task log: <a href="{{ ti.log_url }}">{{ ti.log_url }}</a></p>
"""


def recipients() -> list[str]:
    """The alert recipients of ``[associate] alert_to`` (comma-separated), none when unset."""
    return [address.strip() for address in (config.get("alert_to") or "").split(",") if address.strip()]


def failure_notifiers() -> list:
    """The DAG's ``on_failure_callback``: an ``SmtpNotifier`` when recipients are set, else nothing."""
    to = recipients()
    if not to:
        return []
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return [SmtpNotifier(to=to, smtp_conn_id=config.get("alert_smtp_conn_id") or "smtp_default",
                         subject=SUBJECT, html_content=BODY)]
