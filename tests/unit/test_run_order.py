"""The run gate's decision: one run past it at a time, dated runs in order, undated ones last."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from associate.run_order import GateView, may_pass

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)


def view(*, dated=True, running=1, before_gate=1, earlier=None):
    return GateView(logical_date=DAY if dated else None, running_runs=running,
                    runs_before_gate=before_gate, earlier_running=earlier)


@pytest.mark.parametrize("dated", [True, False])
def test_the_only_run_passes(dated):
    assert may_pass(view(dated=dated))[0]


@pytest.mark.parametrize("dated", [True, False])
def test_a_run_waits_while_another_is_past_the_gate(dated):
    passed, why = may_pass(view(dated=dated, running=2, before_gate=1))
    assert not passed and "1 other run(s) of this DAG are past the gate" in why


def test_a_dated_run_waits_for_an_earlier_dated_run_still_at_the_gate():
    passed, why = may_pass(view(running=2, before_gate=2, earlier="backfill__2026-03-01T00:00:00+00:00"))
    assert not passed and "backfill__2026-03-01" in why and "earlier logical date" in why


def test_the_earliest_dated_run_goes_first_among_waiting_runs():
    assert may_pass(view(running=3, before_gate=3, earlier=None))[0]


def test_a_run_without_a_logical_date_lets_waiting_dated_runs_go_first():
    passed, why = may_pass(view(dated=False, running=2, before_gate=2))
    assert not passed and "go first" in why


def test_a_running_run_whose_gate_is_not_scheduled_yet_counts_as_past_it():
    # Its gate task is still null: not counted before the gate, so this run waits (never overlaps).
    assert not may_pass(view(running=2, before_gate=1))[0]
