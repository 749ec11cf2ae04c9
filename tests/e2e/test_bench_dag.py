"""The DAG benchmark runs the DAG through `airflow dags test` end to end and reports every task (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

# A bound, not a timing: two DAG runs take about 2 minutes on a quiet machine, far more on a busy one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# The DAG's tasks (approve_send only where the approval gate exists).
TASKS = {"wait_for_earlier_runs", "extract", "validate", "ensure_companies", "detect_changes", "build_batches",
         "post", "write_back", "report", "check_failures"}


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory):
    """300 customers on SQLite: a real full run, then a real incremental run after a 1 % change.

    Two runs, not three: a dry run costs as much Airflow start-up as a real one, and
    tests/e2e/test_dag.py runs one already.
    """
    tmp_path = tmp_path_factory.mktemp("bench_dag")
    out = tmp_path / "DAG.md"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "plugins"), "HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.bench_dag", "--sizes", "300", "--backends", "sqlite", "--kinds", "real",
         "--changes", "0.01", "--change-kinds", "real", "--workdir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    raw = json.loads(out.with_suffix(".json").read_text())
    runs = {(r["run"], r["kind"]): r for r in raw["results"]}
    return out.read_text(encoding="utf-8"), runs, tmp_path


def test_every_run_succeeds_with_every_task_timed(bench_report):
    _markdown, runs, _ = bench_report
    assert set(runs) == {("full", "real"), ("1 % changed (incremental)", "real")}
    for key, run in runs.items():
        assert run["state"] == "success" and run["ok"], key
        assert TASKS <= set(run["tasks"]), (key, sorted(run["tasks"]))
        assert run["wall_s"] > run["startup_s"] > 0, key
        assert run["peak_rss_mib"]["largest_process"] > 50, key
    real = runs[("full", "real")]
    assert all(real["tasks"][task]["n"] >= 1 for task in TASKS), real["tasks"]


def test_requests_are_counted_against_the_fewest(bench_report):
    _markdown, runs, _ = bench_report
    real, change = runs[("full", "real")], runs[("1 % changed (incremental)", "real")]
    assert real["api"]["fewest"]["company_writes"] == 30  # 31 generated, one bad
    assert real["api"]["fewest"]["bulk"] >= 4  # at least one call per hierarchy depth
    for run in (real, change):
        assert run["api"]["requests"] >= run["api"]["fewest_total"] > 0
        assert run["api"]["ratio"] >= 1.0
        assert run["api"]["http_429"] == 0
    # The incremental run read the touched customers and sent only them, as updates.
    assert change["touched"] == 3
    assert change["api"]["fewest"]["customers"] == change["plan"]["to_send"] <= 3
    assert change["api"]["by_endpoint"].get("POST /v2/companies", 0) == 0


def test_markdown_has_a_row_per_run(bench_report):
    markdown, runs, tmp_path = bench_report
    assert "| backend | customers | run | kind |" in markdown
    assert markdown.count("| sqlite | 300 |") == len(runs) + 1  # the runs and the setup row
    assert len(list((tmp_path / "work" / "results").glob("*.json"))) == len(runs)
