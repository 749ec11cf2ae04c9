"""Alerts: a run in which too many sent customers failed fails after its write-back and
report, and the smtp provider's notifier mails the steward the run, its counts and its report.

The mail goes to a real SMTP server on loopback (aiosmtpd), through the Airflow SMTP
connection, from a real ``airflow dags test`` run against the sandbox.
"""

from __future__ import annotations

import email
import json
import socket
import sqlite3

import pytest
import requests

from dag_support import DAG_ID, TILL, airflow_env, migrate, run_dag, task_tries

pytestmark = pytest.mark.slow

STEWARD = "steward@example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"


def body_text(message: email.message.Message) -> str:
    return "\n".join(part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8", "replace")
                     for part in message.walk() if part.get_content_maintype() == "text")


def test_a_run_over_max_failed_ratio_fails_after_write_back_and_mails_the_steward(tmp_path):
    from aiosmtpd.controller import Controller

    from associate.capillary.settings import basic_authorization
    from associate.company_requests import company_request
    from associate.sandbox.launcher import SandboxProcess
    from bench.generate import generate_warehouse, load_sqlite

    companies, customers = generate_warehouse(40, seed=5, bad_ratio=0.0)
    warehouse = tmp_path / "warehouse.db"
    load_sqlite(warehouse, companies, customers)
    # A company deleted in Capillary stays there, inactive: its customers are sent and fail (1705).
    inactive = customers["company_external_id"].dropna().value_counts().index[0]
    company = companies.loc[companies["company_external_id"] == inactive].iloc[0]
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    home = tmp_path / "home"
    home.mkdir()
    try:
        with SandboxProcess(tmp_path / "sandbox.db", credentials=[TILL]) as sandbox:
            auth = {"Authorization": basic_authorization(*TILL)}
            body = company_request(company)  # as the pipeline sends it: found unchanged, not updated
            for call in (requests.post(f"{sandbox.url}/v2/companies", json=body, headers=auth, timeout=30),
                         requests.delete(f"{sandbox.url}/v2/companies", params={"externalId": inactive},
                                         headers=auth, timeout=30)):
                assert call.status_code == 200, call.text
            env = airflow_env(
                home, {"conn_type": "sqlite", "host": str(warehouse)}, sandbox.url,
                AIRFLOW__ASSOCIATE__ALERT_TO=STEWARD,
                AIRFLOW_CONN_SMTP_DEFAULT=json.dumps({
                    "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
                    "extra": {"from_email": "airflow@example.com", "disable_ssl": True, "disable_tls": True},
                }),
            )
            migrate(env)
            run = run_dag(env, conf={"mode": "full", "max_failed_ratio": 0.0})
    finally:
        smtp.stop()

    assert run.state == "failed", "\n".join(
        line[-300:] for line in run.log.splitlines() if any(w in line for w in ("Companies", "Customers", "failed", "Held")))
    with sqlite3.connect(warehouse) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM associate_sync_results WHERE run_id = ? "
                                   "AND entity = 'customer' GROUP BY status", (run.run_id,)).fetchall())
        (inactive_failures,) = db.execute("SELECT count(*) FROM associate_sync_results WHERE run_id = ? "
                                          "AND error_code = '1705'", (run.run_id,)).fetchone()
        (held_back,) = db.execute("SELECT count(*) FROM associate_sync_results WHERE run_id = ? AND entity = "
                                  "'customer' AND error_message LIKE 'not sent: parent %'", (run.run_id,)).fetchone()
    # Everything was written back before the run failed: the inactive company's customers
    # failed (1705), their children were held back (parent failed), the rest succeeded.
    assert inactive_failures > 0 and statuses.get("success", 0) > 0, statuses
    assert statuses["failed"] == inactive_failures + held_back, statuses
    tried = sum(statuses.values())
    # check_failures failed once, for good: no retry can fix the data.
    assert task_tries(home, run.run_id, "check_failures")[:2] == (1, "failed")
    assert task_tries(home, run.run_id, "report")[1] == "success"

    alerts = [m for m in inbox.messages if "check_failures" in m["Subject"]]
    assert len(alerts) == 1, [m["Subject"] for m in inbox.messages]
    alert = alerts[0]
    assert alert["X-Envelope-To"] == STEWARD and run.run_id in alert["Subject"] and DAG_ID in alert["Subject"]
    text = body_text(alert)
    assert (f"{statuses['failed']} of {tried} customers the run tried to send failed" in text
            and f"{held_back} of them held back because their parent failed" in text), text
    assert "report.html" in text and run.run_id in text
