"""The UI as a user clicks it: Playwright on Debian's chromium against `make airflow`'s deployment.

Log in (simple auth manager), open the DAG's trigger form (every Param shows its title and
description), trigger a full dry run from it, wait for the run, then open its "Report" tab
(the plugin's page in an iframe) and the report itself. Each step leaves a screenshot in
ASSOCIATE_TEST_ARTIFACTS (default: test-artifacts/browser in the checkout, gitignored).
Chromium is the system package (apt `chromium`, `chromium-driver`; .ci/run installs it):
Playwright never downloads a browser, and a missing /usr/bin/chromium fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from dag_support import DAG_ID, ROOT

from deployment_support import running_deployment

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000  # a busy 2-core machine renders the UI slowly
ARTIFACTS = Path(os.environ.get("ASSOCIATE_TEST_ARTIFACTS", ROOT / "test-artifacts" / "browser"))
STEPS = ["01-login", "02-dag", "03-trigger-form", "04-trigger-form-filled", "05-run-triggered",
         "06-run-report-tab", "07-report"]


def dag_params() -> dict[str, tuple[str, str]]:
    """Each Param's (title, description), as the DAG file declares them."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    params = bag.dags[DAG_ID].params
    return {name: (param.schema["title"], param.description) for name, param in params.items()}


def test_trigger_form_dry_run_and_report_in_the_browser(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    params = dag_params()
    assert len(params) == 8, params
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    print(f"browser screenshots: {ARTIFACTS}")

    # Only the triggered run: unpausing would otherwise start the latest day's scheduled run too.
    with running_deployment(tmp_path / "state", sample_customers=40,
                            extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}) as deployment, \
            sync_playwright() as playwright:
        deployment.wait_for_dag()
        deployment.unpause()
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        # Tall enough that the whole trigger form fits in one screenshot.
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)

        def shot(step: str) -> None:
            page.screenshot(path=str(ARTIFACTS / f"{step}.png"))

        try:
            # The simple auth manager's login page.
            page.goto(deployment.api_url + "/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(deployment.password())
            shot("01-login")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(deployment.api_url + "/")

            page.goto(f"{deployment.api_url}/dags/{DAG_ID}")
            expect(page.get_by_role("link", name="Dry run", exact=True)).to_be_visible()
            shot("02-dag")

            # The trigger form: every Param with its title and description.
            page.get_by_role("button", name="Trigger").click()
            form = page.get_by_role("dialog")
            expect(form.get_by_text("Run Parameters")).to_be_visible()
            for name, (title, description) in params.items():
                # A required Param's label is its title and a "*".
                label = form.locator("label").filter(has_text=re.compile(rf"^\s*{re.escape(title)}\s*\*?\s*$"))
                expect(label, f"{name}'s title").to_have_count(1)
                expect(label, f"{name}'s title").to_be_visible()
                expect(form.get_by_text(description, exact=True), f"{name}'s description").to_be_visible()
            shot("03-trigger-form")

            # A full dry run: the switch (its checkbox is visually hidden) and the mode's select.
            dry_run = form.get_by_role("checkbox", name="Dry run")
            expect(dry_run).not_to_be_checked()
            form.locator("label[data-scope=switch]", has=page.get_by_role("checkbox", name="Dry run")).click()
            expect(dry_run).to_be_checked()
            form.get_by_role("combobox", name="Mode").click()
            page.get_by_role("option", name="full", exact=True).click()
            expect(form.locator("input[name=element_mode]")).to_have_value("full")  # the select's form value
            shot("04-trigger-form-filled")
            form.get_by_role("button", name="Trigger").click()

            # The UI goes to the new run's page: its id is in the URL.
            page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/[^/]+$"))
            run_id = unquote(page.url.rsplit("/", 1)[1])
            expect(page.get_by_text(run_id).first).to_be_visible()
            expect(page.get_by_role("link", name="Report", exact=True)).to_be_visible()
            shot("05-run-triggered")
            run = deployment.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}").json()
            assert run["run_type"] == "manual" and run["conf"]["dry_run"] is True and run["conf"]["mode"] == "full", run

            state = deployment.wait_for_run(run_id, timeout=300)
            tasks = {ti["task_id"]: ti["state"] for ti in deployment.task_instances(run_id)}
            assert state == "success", f"{tasks}\n{deployment.log_tails()}"
            assert deployment.sandbox_stats()["customers"] == 0, "a dry run sent customers"

            # The run's "Report" tab shows the plugin's report in an iframe.
            page.goto(f"{deployment.api_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            page.get_by_role("link", name="Report", exact=True).click()
            report = page.frame_locator("iframe").first
            heading = report.get_by_role("heading", level=1)
            expect(heading).to_contain_text("Customer association run")
            expect(heading).to_contain_text(run_id)
            expect(report.get_by_text("Dry run, nothing sent")).to_be_visible()
            shot("06-run-report-tab")

            # The report link itself opens the report page.
            src = page.locator("iframe").first.get_attribute("src")
            assert src and src.endswith("/report.html"), src
            page.goto(deployment.api_url + src if src.startswith("/") else src)
            expect(page).to_have_title(f"Customer association run {run_id}")
            expect(page.get_by_role("link", name="payload preview")).to_be_visible()
            shot("07-report")
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            browser.close()

    missing = [step for step in STEPS if not (ARTIFACTS / f"{step}.png").is_file()
               or not (ARTIFACTS / f"{step}.png").stat().st_size]
    assert not missing, missing
