"""The approval gate: a run that would send more than ``approval_threshold`` customers waits for a person.

``ApproveSendOperator`` sits between ``build_batches`` and ``post``. Below the threshold (or
without one, or in a dry run) it returns at once. Above it, it asks in the Airflow UI
(Browse → Required Actions, or the task's Required Actions tab) through the standard provider's HITL
``ApprovalOperator``: on Airflow 3.3 the task waits in state ``awaiting_input`` (no worker
slot, no triggerer). Approve: ``post`` sends. Reject, or no answer within
``[associate] approval_timeout_hours``: ``post`` is skipped (nothing is sent), the
customers it would have sent get a failed result "not sent: ... rejected" (a ``full`` run, or
this run cleared, sends them), and ``write_back`` and ``report`` run as usual.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

log = logging.getLogger(__name__)

# Hours a send waits for an answer before it counts as rejected.
DEFAULT_TIMEOUT_HOURS = 24.0
DECISION_FILE = "approval.json"


def needs_approval(to_send: int, threshold: int | None, dry_run: bool) -> bool:
    """Whether a run must wait for a person: it would send more customers than the threshold."""
    return threshold is not None and not dry_run and to_send > threshold


def timeout_hours() -> float:
    """``[associate] approval_timeout_hours``, 24 by default."""
    from associate import config

    value = config.get("approval_timeout_hours")
    return float(value) if value else DEFAULT_TIMEOUT_HOURS


def decision(run_id: str) -> dict[str, Any] | None:
    """What the gate decided for a run (``approved``, ``by``, ``at``, counts), or None if it never asked."""
    from associate import staging

    path = staging.run_path(run_id, DECISION_FILE)
    return staging.read_json(path) if staging.exists(path) else None


def rejection_line(run_id: str) -> str | None:
    """The sentence the report and the log give a rejected send, or None when nothing was rejected."""
    made = decision(run_id)
    if not made or made.get("approved"):
        return None
    who = made.get("by") or f"nobody within {float(made.get('timeout_hours') or 0):g} h (timed out)"
    return (f"Send rejected at the approval gate by {who} at {made.get('at')}: "
            f"{made.get('to_send')} customer(s) not sent (threshold {made.get('threshold')}).")


class ApproveSendOperator(ApprovalOperator):
    """Wait for a person's approval before ``post`` when the run would send more than ``threshold`` customers."""

    template_fields = (*ApprovalOperator.template_fields, "run_id", "threshold", "dry_run")

    def __init__(self, *, run_id: str, threshold: Any = None, dry_run: Any = False, **kwargs) -> None:
        # Reject is the default answer: the scheduler applies it when the response times out.
        kwargs.setdefault("subject", "Approve the send to Capillary")
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)
        super().__init__(**kwargs)
        self.run_id = run_id
        self.threshold = threshold
        self.dry_run = dry_run

    def execute(self, context):
        from associate import staging

        # An answer from an earlier try of this run (cleared since) no longer holds.
        earlier = staging.run_path(self.run_id, DECISION_FILE)
        if earlier.exists():
            earlier.unlink()
        plan = staging.read_json(staging.run_path(self.run_id, "plan.json"))
        to_send = int(plan.get("to_send", 0))
        threshold = self._threshold()
        dry_run = bool(plan.get("dry_run")) or self.dry_run in (True, "True", "true")
        if not needs_approval(to_send, threshold, dry_run):
            why = ("no approval_threshold" if threshold is None else "a dry run sends nothing" if dry_run
                   else f"{to_send} to send <= approval_threshold {threshold}")
            log.info("Approval gate: no approval needed (%s); the send goes on.", why)
            return None

        hours = timeout_hours()
        self.response_timeout = timedelta(hours=hours)
        self.subject = f"Send {to_send} customers to Capillary? (run {self.run_id})"
        self.body = _body(self.run_id, plan, threshold, hours, context["dag"].dag_id)
        log.info("Approval gate: %d customers to send > approval_threshold %d: waiting up to %g h for a "
                 "person (Airflow UI: Browse -> Required Actions); no answer means rejected.",
                 to_send, threshold, hours)
        return super().execute(context)

    def _threshold(self) -> int | None:
        # Rendered natively (the DAG's render_template_as_native_obj); text when rendered as a string.
        return None if self.threshold in (None, "", "None") else int(self.threshold)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        # Recorded before the parent skips post: write_back may start the moment post is skipped.
        if "error" not in event:
            self._record(event)
        return super().execute_complete(context=context, event=event)

    def _record(self, event: dict[str, Any]) -> None:
        """Write the answer (``approval.json``); on a rejection, the customers not sent."""
        from associate import staging

        approved = list(event["chosen_options"]) == [self.APPROVE]
        user = event.get("responded_by_user") or {}
        plan = staging.read_json(staging.run_path(self.run_id, "plan.json"))
        made = {
            "approved": approved,
            "by": user.get("name") or user.get("id"),
            "at": str(event.get("responded_at")),
            "to_send": int(plan.get("to_send", 0)),
            "threshold": self._threshold(),
            "timeout_hours": timeout_hours(),
        }
        staging.write_json(made, staging.run_path(self.run_id, DECISION_FILE))
        line = None if approved else rejection_line(self.run_id)
        # Also on an approval: a cleared task asked again drops what an earlier rejection recorded.
        _record_not_sent(self.run_id, line)
        if approved:
            log.info("Approval gate: approved by %s; the send goes on.", made["by"])
        else:
            log.warning("%s post is skipped; write_back records them as not sent (a full run, or this run "
                        "cleared, sends them).", line)


def _body(run_id: str, plan: dict, threshold: int, hours: float, dag_id: str) -> str:
    """The request a person reads (Markdown): the counts, what each answer does, how to look first."""
    from associate.report_views import PREFIX

    return (
        f"Run `{run_id}` would send **{plan.get('to_send', 0)}** customers to Capillary "
        f"(**{plan.get('register', 0)}** to register, **{plan.get('update', 0)}** to update; "
        f"{plan.get('unchanged', 0)} unchanged, {plan.get('held_back', 0)} held back), more than "
        f"`approval_threshold` = {threshold}.\n\n"
        f"* **Approve**: the customers are sent.\n"
        f"* **Reject**: nothing is sent; the run still writes its results (these customers as "
        f"\"not sent: rejected\"; a `full` run, or this run cleared, sends them) and its report.\n"
        f"* No answer within {hours:g} h counts as **Reject**.\n\n"
        f"To look before deciding: the `detect_changes` log has the counts; a dry run "
        f"(the DAG's **Dry run** tab, `{PREFIX}/dry-run/{dag_id}`) writes a payload preview "
        f"that opens from that run's **Report** tab."
    )


def _record_not_sent(run_id: str, reason: str | None) -> None:
    """Give every customer the rejected send would have sent a failed outcome with the reason.

    They go with the held-back customers, which ``write_back`` and the report already read
    (no customer to send is held back, so the two never overlap). Earlier ones are replaced:
    a retried task writes each customer once, and ``reason`` None (an approval) removes them.
    """
    import pandas as pd

    from associate import staging
    from associate.reconcile import not_sent_outcomes

    keys = staging.read_columns(staging.run_path(run_id, "changes", "to_send.parquet"), ["entity_key"])
    keys = keys["entity_key"].astype(str).tolist()
    held_path = staging.run_path(run_id, "outcomes", "held_back.parquet")
    held = staging.read_frame(held_path) if staging.exists(held_path) else None
    earlier = held["entity_key"].astype(str).isin(set(keys)) if held is not None else None
    if reason is None and (earlier is None or not earlier.any()):
        return
    frames = [held.loc[~earlier]] if held is not None and len(held) else []
    if reason is not None:
        frames.append(not_sent_outcomes(keys, [f"not sent: {reason}"] * len(keys)))
    staging.write_frame(pd.concat(frames, ignore_index=True) if frames else not_sent_outcomes([], []), held_path)
