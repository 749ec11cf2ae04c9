"""The approval gate's decision: when a run waits for a person, and what a rejection records."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator

from associate import approval, staging
from associate.approval import ApproveSendOperator

RUN = "manual__2026-03-10T00:00:00+00:00"
PLAN = {"to_send": 5, "register": 3, "update": 2, "unchanged": 7, "held_back": 1, "dry_run": False}


@pytest.fixture
def staged_run(tmp_path, monkeypatch):
    """A run whose detect_changes planned 5 customers to send, one held back."""
    import pandas as pd

    from associate.reconcile import not_sent_outcomes

    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    staging.write_json(PLAN, staging.run_path(RUN, "plan.json"))
    staging.write_frame(pd.DataFrame({"entity_key": [f"C{i}" for i in range(5)]}),
                        staging.run_path(RUN, "changes", "to_send.parquet"))
    staging.write_frame(not_sent_outcomes(["H1"], ["not sent: fleet company F1 could not be created"]),
                        staging.run_path(RUN, "outcomes", "held_back.parquet"))
    return RUN


@pytest.fixture
def asked(monkeypatch):
    """The requests the gate made of a person (the HITL operator's execute, which waits, replaced)."""
    calls = []
    monkeypatch.setattr(ApprovalOperator, "execute", lambda self, context: calls.append(self))
    return calls


def gate(threshold, dry_run=False) -> ApproveSendOperator:
    return ApproveSendOperator(task_id="approve_send", run_id=RUN, threshold=threshold, dry_run=dry_run)


CONTEXT = {"dag": SimpleNamespace(dag_id="associate_customers")}


@pytest.mark.parametrize(("to_send", "threshold", "dry_run", "waits"), [
    (5, None, False, False),  # no threshold: no gate
    (5, 5, False, False),  # at the threshold: sent without asking
    (5, 4, False, True),
    (5, 0, False, True),
    (0, 0, False, False),  # nothing to send
    (5, 4, True, False),  # a dry run sends nothing
])
def test_a_run_waits_only_above_the_threshold(to_send, threshold, dry_run, waits):
    assert approval.needs_approval(to_send, threshold, dry_run) is waits


@pytest.mark.parametrize(("threshold", "dry_run"), [(None, False), (5, False), (9, False), (1, True)])
def test_the_gate_returns_at_once_when_no_approval_is_needed(staged_run, asked, threshold, dry_run):
    assert gate(threshold, dry_run).execute(CONTEXT) is None
    assert asked == []


def test_above_the_threshold_it_asks_with_the_counts_and_rejects_after_the_timeout(staged_run, asked):
    operator = gate(4)
    operator.execute(CONTEXT)
    assert asked == [operator]
    assert RUN in operator.subject and "5 customers" in operator.subject
    assert "**3** to register, **2** to update" in operator.body and "`approval_threshold` = 4" in operator.body
    assert "/associate/dry-run/associate_customers" in operator.body
    # No answer within the timeout is the default answer: Reject.
    assert operator.response_timeout == timedelta(hours=24) and operator.defaults == ["Reject"]


def test_the_timeout_is_a_setting(staged_run, asked, monkeypatch):
    monkeypatch.setenv("AIRFLOW__ASSOCIATE__APPROVAL_TIMEOUT_HOURS", "2.5")
    operator = gate(0)
    operator.execute(CONTEXT)
    assert operator.response_timeout == timedelta(hours=2.5)


def answer(option: str, user: dict | None) -> dict:
    return {"chosen_options": [option], "params_input": {},
            "responded_at": datetime(2026, 3, 10, 9, 30, tzinfo=timezone.utc), "responded_by_user": user}


def test_a_rejection_records_every_customer_as_not_sent_and_names_who(staged_run):
    gate(4).execute_complete(CONTEXT, answer("Reject", {"id": "1", "name": "steward"}))

    line = approval.rejection_line(RUN)
    assert line.startswith("Send rejected at the approval gate by steward") and "5 customer(s) not sent" in line
    held = staging.read_frame(staging.run_path(RUN, "outcomes", "held_back.parquet"))
    assert sorted(held["entity_key"]) == ["C0", "C1", "C2", "C3", "C4", "H1"]
    assert set(held["status"]) == {"failed"}
    assert held.set_index("entity_key").loc["C0", "error_message"].startswith("not sent: Send rejected")


def test_a_rejection_recorded_twice_gives_each_customer_one_outcome(staged_run):
    for _ in range(2):
        gate(4).execute_complete(CONTEXT, answer("Reject", None))  # a timeout: nobody answered
    held = staging.read_frame(staging.run_path(RUN, "outcomes", "held_back.parquet"))
    assert len(held) == 6 and held["entity_key"].is_unique
    assert "by nobody within 24 h (timed out)" in approval.rejection_line(RUN)


def test_an_approval_records_nothing_not_sent(staged_run):
    gate(4).execute_complete(CONTEXT, answer("Approve", {"id": "1", "name": "steward"}))
    assert approval.decision(RUN)["approved"] is True and approval.rejection_line(RUN) is None
    held = staging.read_frame(staging.run_path(RUN, "outcomes", "held_back.parquet"))
    assert list(held["entity_key"]) == ["H1"]


def test_an_approval_after_a_rejection_takes_the_not_sent_outcomes_back(staged_run):
    # The task cleared and asked again: approved this time, post sends them, nothing says "not sent".
    gate(4).execute_complete(CONTEXT, answer("Reject", {"id": "1", "name": "steward"}))
    gate(4).execute_complete(CONTEXT, answer("Approve", {"id": "1", "name": "steward"}))
    held = staging.read_frame(staging.run_path(RUN, "outcomes", "held_back.parquet"))
    assert list(held["entity_key"]) == ["H1"] and approval.rejection_line(RUN) is None


def test_a_run_the_gate_never_asked_has_no_rejection(staged_run):
    assert approval.rejection_line(RUN) is None


def test_the_report_leads_with_the_rejection(staged_run, tmp_path):
    from associate.report import RunSummary

    gate(4).execute_complete(CONTEXT, answer("Reject", {"id": "1", "name": "steward"}))
    summary = RunSummary(run_id=RUN, notice=approval.rejection_line(RUN))
    assert summary.to_text().splitlines()[2].startswith("Send rejected at the approval gate by steward")
    summary.to_html(tmp_path / "report.html")
    assert "<strong>Send rejected at the approval gate by steward" in (tmp_path / "report.html").read_text()


def test_a_cleared_gate_forgets_the_earlier_answer(staged_run, asked):
    gate(4).execute_complete(CONTEXT, answer("Reject", {"id": "1", "name": "steward"}))
    gate(9).execute(CONTEXT)  # the run cleared and run again, no approval needed this time
    assert approval.rejection_line(RUN) is None
