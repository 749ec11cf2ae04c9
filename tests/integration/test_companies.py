"""Ensuring fleet companies against the sandbox: one call per new or changed company, a GET only
to settle an ambiguous answer, holding companies before their subsidiaries, a progress line."""

from __future__ import annotations

import logging
import threading

import pandas as pd
import pytest

from associate.capillary.client import CapillaryClient
from associate.capillary.budget import reset_registry
from associate.capillary.settings import ClientSettings
from associate.capillary.transport import Transport
from sandbox_support import HIERARCHY, TILL, SandboxClient, new_key
from sandbox_support import company_request as company

# With ``commit500=0.5`` this seed's first two draws are: commit500 (the write is stored,
# its answer a 500), then none (random.Random(1)). Without retries the write's answer is lost.
LOST_ANSWER_SEED = 1
METHODS = ("GET", "POST", "PUT")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from associate.sandbox.launcher import SandboxProcess

    db = tmp_path_factory.mktemp("companies") / "sandbox.db"
    with SandboxProcess(str(db)) as process:
        yield process


def make_client(sandbox, **overrides) -> CapillaryClient:
    """A client of the sandbox: fast retries, a budget that never waits, four threads."""
    reset_registry()
    settings = dict(base_url=sandbox.url, login=TILL[0], password=TILL[1], rate_limit_rpm=60000, concurrency=4,
                    max_retries=3, backoff_base=0.01, backoff_max=0.05)
    settings.update(overrides)
    return CapillaryClient(ClientSettings(**settings))


@pytest.fixture
def client(sandbox):
    with make_client(sandbox) as client:
        yield client


class CompanyCalls:
    """Company requests every client puts on the wire from now on (retries included), by method.

    Counted by the clients: the sandbox counts a request after its reply is sent, so its
    counters may lag behind an answer the client already has.
    """

    def __init__(self, monkeypatch):
        self.counts = dict.fromkeys(METHODS, 0)
        lock, send = threading.Lock(), Transport.send

        def counting_send(transport, method, path, **kwargs):
            answer = send(transport, method, path, **kwargs)
            if path == "/v2/companies":
                with lock:
                    self.counts[method] += answer.attempts
            return answer

        monkeypatch.setattr(Transport, "send", counting_send)

    def since(self) -> dict[str, int]:
        """{method: requests} since this was made."""
        return dict(self.counts)


def known(outcomes) -> dict[str, int]:
    """The sync state's view after a run: {external id: Capillary id} of every company ensured."""
    return {o.external_id: o.company_id for o in outcomes if o.company_id is not None}


def fleet(tag: str) -> list[dict]:
    """Three levels: two holding companies, three subsidiaries, one sub-subsidiary (input order mixed)."""
    return [
        company(f"SUBSUB-{tag}", parent=f"SUB1-{tag}"),
        company(f"SUB1-{tag}", parent=f"HOLD1-{tag}", region="north"),
        company(f"HOLD1-{tag}"),
        company(f"SUB2-{tag}", parent=f"HOLD1-{tag}"),
        company(f"HOLD2-{tag}", region="south"),
        company(f"SUB3-{tag}", parent=f"HOLD2-{tag}"),
    ]


def test_a_first_sync_costs_one_post_per_company_parents_before_subsidiaries(sandbox, client, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="associate.capillary.companies")
    tag = new_key()
    calls = CompanyCalls(monkeypatch)
    outcomes = client.ensure_companies(fleet(tag))
    assert [o.action for o in outcomes] == ["created"] * 6, outcomes
    assert calls.since() == {"GET": 0, "POST": 6, "PUT": 0}
    # Four threads, yet every subsidiary found its holding company (else 1703).
    sub = client.get_company(f"SUBSUB-{tag}")
    assert sub["parentCompany"]["externalId"] == f"SUB1-{tag}" and sub["companyId"] == outcomes[0].company_id
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Companies: ")]
    assert lines[-1].startswith("Companies: 6/6 ensured (created 6, updated 0, unchanged 0, failed 0)"), lines
    assert len(lines) == 3  # one per depth


def test_a_subsidiary_goes_as_soon_as_its_own_holding_company_is_answered(sandbox, monkeypatch):
    """No depth barrier: SUB2 is sent while the other holding company HOLD1 is still unanswered."""
    tag = new_key()
    sub_sent = threading.Event()
    seen_while_hold1_waited = []
    send = Transport.send

    def send_in_order(transport, method, path, *, json_body=None, **kwargs):
        external_id = (json_body or {}).get("externalId") if isinstance(json_body, dict) else None
        if external_id == f"HOLD1-{tag}":
            # HOLD1's answer waits (bounded) for SUB2, a subsidiary of the other holding company.
            seen_while_hold1_waited.append(sub_sent.wait(timeout=30))
        answer = send(transport, method, path, json_body=json_body, **kwargs)
        if external_id == f"SUB2-{tag}":
            sub_sent.set()
        return answer

    monkeypatch.setattr(Transport, "send", send_in_order)
    with make_client(sandbox, concurrency=2) as client:
        outcomes = client.ensure_companies([company(f"HOLD1-{tag}"), company(f"HOLD2-{tag}"),
                                            company(f"SUB2-{tag}", parent=f"HOLD2-{tag}"),
                                            company(f"SUB1-{tag}", parent=f"HOLD1-{tag}")])
    assert [o.action for o in outcomes] == ["created"] * 4
    assert seen_while_hold1_waited == [True]


def test_a_change_run_costs_one_put_per_changed_company(sandbox, client, monkeypatch):
    tag = new_key()
    first = client.ensure_companies(fleet(tag))
    changed = [company(f"HOLD1-{tag}", name="Acme Holding"), company(f"SUB1-{tag}", parent=f"HOLD1-{tag}")]
    calls = CompanyCalls(monkeypatch)
    outcomes = client.ensure_companies(changed, known_ids=known(first))
    assert [(o.action, o.company_id) for o in outcomes] == [("updated", first[2].company_id),
                                                            ("updated", first[1].company_id)]
    assert calls.since() == {"GET": 0, "POST": 0, "PUT": 2}
    assert client.get_company(f"HOLD1-{tag}")["name"] == "Acme Holding"
    # Removed extendedFields are removed in Capillary too, and the parent is kept.
    sub = client.get_company(f"SUB1-{tag}")
    assert sub["extendedFields"] == {} and sub["parentCompany"]["externalId"] == f"HOLD1-{tag}"


def test_a_company_that_exists_though_the_state_lost_it_is_settled_by_one_get(sandbox, client, monkeypatch):
    key, other = new_key("EXISTS"), new_key("EXISTS")
    client.ensure_companies([company(key), company(other)])
    calls = CompanyCalls(monkeypatch)
    kept, renamed = client.ensure_companies([company(key), company(other, name="Renamed")])  # no known_ids
    assert (kept.action, renamed.action) == ("unchanged", "updated")
    # POST 1702 twice, GET twice, one PUT for the company whose name differs.
    assert calls.since() == {"GET": 2, "POST": 2, "PUT": 1}
    assert kept.company_id == client.get_company(key)["companyId"]
    assert client.get_company(other)["name"] == "Renamed"


def test_a_company_the_state_knows_but_capillary_lost_is_created_without_a_get(sandbox, client, monkeypatch):
    key = new_key("LOSTBYCAP")
    calls = CompanyCalls(monkeypatch)
    outcome, = client.ensure_companies([company(key)], known_ids={key: 123456})
    assert (outcome.action, outcome.error_code) == ("created", None), outcome
    assert calls.since() == {"GET": 0, "POST": 1, "PUT": 1}  # PUT 1704, then POST
    assert outcome.company_id == client.get_company(key)["companyId"] != 123456


def test_a_hierarchy_change_fails_from_the_put_answer(sandbox, client, monkeypatch):
    key = new_key("MOVE")
    created, = client.ensure_companies([company(key)])
    calls = CompanyCalls(monkeypatch)
    moved = dict(company(key), hierarchyDefinitionCode="some-other-hierarchy")
    failed, = client.ensure_companies([moved], known_ids=known([created]))
    assert (failed.action, failed.error_code) == ("failed", 1711), failed
    assert "cannot change" in failed.error_message
    assert calls.since() == {"GET": 0, "POST": 0, "PUT": 1}


def test_an_inactive_company_fails_its_update_and_warns_when_settled(sandbox, client):
    key = new_key("GONE")
    created, = client.ensure_companies([company(key)])
    response = SandboxClient(sandbox.url).session.delete(sandbox.url + "/v2/companies", params={"externalId": key})
    assert response.status_code == 200, response.text
    # Known: the PUT is refused (1705); its customers cannot be associated.
    failed, = client.ensure_companies([company(key, name="New name")], known_ids=known([created]))
    assert (failed.action, failed.error_code) == ("failed", 1705) and "inactive" in failed.error_message
    # Unknown to the state: POST 1702, GET says inactive, the company is kept with a warning.
    kept, = client.ensure_companies([company(key)])
    assert (kept.action, kept.status, [w["code"] for w in kept.warnings]) == ("unchanged", "warning", [1705])


def test_subsidiaries_of_a_failed_holding_company_fail_without_calls(sandbox, client, monkeypatch):
    tag = new_key()
    bad = dict(company(f"BAD-{tag}"), hierarchyDefinitionCode="no-such-hierarchy")
    calls = CompanyCalls(monkeypatch)
    outcomes = client.ensure_companies([company(f"KID-{tag}", parent=f"BAD-{tag}"), bad,
                                        company(f"GRANDKID-{tag}", parent=f"KID-{tag}")])
    assert [(o.action, o.error_code) for o in outcomes] == [("failed", None), ("failed", 1701), ("failed", None)]
    assert f"holding company BAD-{tag} could not be ensured" == outcomes[0].error_message
    assert [o.attempts for o in outcomes] == [0, 1, 0]
    assert calls.since() == {"GET": 0, "POST": 1, "PUT": 0}


@pytest.mark.parametrize("write", ["POST", "PUT"])
def test_a_write_whose_answer_was_lost_is_settled_by_one_get(sandbox, write, monkeypatch):
    key = new_key("LOST")
    with make_client(sandbox) as setup:
        state = known(setup.ensure_companies([company(key)])) if write == "PUT" else {}
    sandbox.restart(faults="commit500=0.5", fault_seed=LOST_ANSWER_SEED)
    try:
        with make_client(sandbox, max_retries=0) as client:
            calls = CompanyCalls(monkeypatch)
            outcome, = client.ensure_companies([company(key, name="Lost Answer Fleet")], known_ids=state)
        counted = calls.since()
    finally:
        sandbox.restart(faults=None, fault_seed=None)
    # The write was stored, its answer lost: the GET finds it as asked, nothing more is sent.
    assert (outcome.action, outcome.error_code, outcome.attempts) == (
        "created" if write == "POST" else "updated", None, 2), outcome
    assert counted == {"GET": 1, "POST": int(write == "POST"), "PUT": int(write == "PUT")}
    with make_client(sandbox) as client:
        stored = client.get_company(key)
    assert stored["name"] == "Lost Answer Fleet" and outcome.company_id == stored["companyId"]


def companies_frame(*rows: tuple) -> pd.DataFrame:
    """A validated companies frame: rows of (external id, name, parent)."""
    return pd.DataFrame(
        [(ext, name, HIERARCHY, parent, None, pd.Timestamp("2026-01-01", tz="UTC")) for ext, name, parent in rows],
        columns=["company_external_id", "company_name", "hierarchy_code", "parent_company_external_id",
                 "extended_fields", "updated_at"],
    )


def test_the_task_posts_new_companies_and_puts_those_the_sync_state_knows(sandbox, tmp_path, monkeypatch):
    import json

    from associate import staged, staging, tasks
    from test_hook import FAST_RETRIES, set_connection

    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_CO", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")}))
    set_connection(monkeypatch, "capillary_co", sandbox.url, **FAST_RETRIES)
    tag = new_key()
    rows = [(f"HOLD-{tag}", "Holding", None), (f"SUB-{tag}", "Subsidiary", f"HOLD-{tag}"), (f"OTHER-{tag}", "Other", None)]

    def run(run_id: str, frame) -> dict[str, str]:
        validated = {"companies": staging.write_frame(frame, staging.run_path(run_id, "valid", "companies.parquet"))}
        uri = tasks.ensure_companies(validated=validated, warehouse_conn_id="warehouse_co",
                                     capillary_conn_id="capillary_co", run_id=run_id, dry_run=False)
        tasks.write_back(run_id=run_id, warehouse_conn_id="warehouse_co", company_outcomes=uri, customer_outcomes=[])
        out = staging.read_frame(uri)
        staged.COMPANY_OUTCOMES.check(out, uri)
        return dict(zip(out["entity_key"], out["action"]))

    calls = CompanyCalls(monkeypatch)
    assert run("run-1", companies_frame(*rows)) == {key: "created" for key, _, _ in rows}
    assert calls.since() == {"GET": 0, "POST": 3, "PUT": 0}
    # Where the task's time with Capillary went, for benchmarks and for whoever reads the log.
    timing = staging.read_json(staging.run_path("run-1", "timing", "ensure_companies.json"))
    assert set(timing) == {"api_seconds", "budget_wait_seconds", "api_wall_seconds", "requests", "http_429"}
    assert timing["requests"] == 3 and timing["http_429"] == 0 and timing["api_seconds"] > 0
    # Threads overlap: the union of requests and waits is at most their sum, at least either.
    assert max(timing["api_seconds"], timing["budget_wait_seconds"]) <= timing["api_wall_seconds"] \
        <= timing["api_seconds"] + timing["budget_wait_seconds"] + 0.01

    rows[1] = (f"SUB-{tag}", "Subsidiary renamed", f"HOLD-{tag}")
    calls = CompanyCalls(monkeypatch)
    assert run("run-2", companies_frame(*rows)) == {f"SUB-{tag}": "updated"}  # unchanged ones are not sent
    assert calls.since() == {"GET": 0, "POST": 0, "PUT": 1}

    rows[2] = (f"OTHER-{tag}", "Other renamed", None)
    validated = {"companies": staging.write_frame(companies_frame(*rows),
                                                  staging.run_path("run-dry", "valid", "companies.parquet"))}
    tasks.ensure_companies(validated=validated, warehouse_conn_id="warehouse_co", capillary_conn_id="capillary_co",
                           run_id="run-dry", dry_run=True)
    assert not staging.run_path("run-dry", "timing").exists()  # a dry run calls nothing: no timing
