"""Where the UI finds a run's reports, and what it refuses to serve."""

from __future__ import annotations

import pytest


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__ASSOCIATE__REPORTS_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("AIRFLOW__ASSOCIATE__REPORTS_BASE", "file://" + str(tmp_path / "published"))
    return tmp_path


def test_a_run_file_lives_in_the_runs_folder_under_reports_base(reports):
    from associate.report_views import run_file

    path = run_file("manual__2026-03-01T00:00:00+00:00", "data_docs/index.html")
    assert str(path).endswith("published/manual__2026-03-01T00_00_00_00_00/data_docs/index.html")


@pytest.mark.parametrize("path", ["../other_run/report.html", "data_docs/../../x", "", "/"])
def test_paths_that_leave_the_runs_folder_are_refused(reports, path):
    from associate.report_views import run_file

    with pytest.raises(ValueError, match="not a report path"):
        run_file("run", path)


def test_reports_are_published_under_reports_base_with_their_data_docs(reports):
    from associate import report_tasks, tasks

    local = tasks.reports_dir("run_1")
    (local / "data_docs").mkdir()
    (local / "report.html").write_text("<h1>report</h1>")
    (local / "data_docs" / "index.html").write_text("docs")
    target = report_tasks.publish_reports("run_1")
    assert target and (reports / "published" / "run_1" / "data_docs" / "index.html").read_text() == "docs"
    assert (reports / "published" / "run_1" / "report.html").read_text() == "<h1>report</h1>"


def test_nothing_is_copied_when_reports_base_is_the_local_folder(tmp_path, monkeypatch):
    from associate import report_tasks, tasks

    monkeypatch.setenv("AIRFLOW__ASSOCIATE__REPORTS_DIR", str(tmp_path / "local"))
    monkeypatch.delenv("AIRFLOW__ASSOCIATE__REPORTS_BASE", raising=False)
    (tasks.reports_dir("run_1") / "report.html").write_text("x")
    assert report_tasks.publish_reports("run_1") is None


def test_the_report_links_its_data_docs_relatively_so_it_opens_where_it_is_served(tmp_path):
    from associate.report import RunSummary

    (tmp_path / "data_docs").mkdir()
    summary = RunSummary.build(run_id="r", data_docs=str(tmp_path / "data_docs" / "index.html"))
    page = (tmp_path / "report.html")
    summary.to_html(page)
    assert 'href="data_docs/index.html"' in page.read_text()
