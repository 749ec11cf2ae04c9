"""CapillaryHook and its CapillaryClient against the running sandbox: auth, retries, faults, batches, companies, logs."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import time

import pytest

from associate.capillary.client import CapillaryClient
from associate.capillary.outcomes import customer_outcome
from associate.capillary.budget import reset_registry
from associate.capillary.settings import basic_authorization
from associate.capillary.transport import TOKENS
from associate.exceptions import CapillaryAuthError, ConfigurationError
from associate.hook import CapillaryHook
from sandbox_support import company_request

HIERARCHY = "code-association2"
BASIC = ("store.server", "server123")
OAUTH = ("demo-key", "demo-secret")
# Small backoffs keep fault tests fast; the logic is the same as with production defaults.
FAST_RETRIES = {"backoff_base": 0.02, "backoff_max": 0.2, "max_retries": 10, "rate_limit_rpm": 60000}

_numbers = itertools.count(int.from_bytes(os.urandom(2), "big") * 100000)
def start_sandbox(tmp_path_factory, name: str, **flags):
    """A sandbox with its own database (start it with `with`)."""
    from associate.sandbox.launcher import SandboxProcess

    db = tmp_path_factory.mktemp(name) / "sandbox.db"
    return SandboxProcess(str(db), log_path=str(db.with_suffix(".log")), **flags)


def set_connection(monkeypatch, conn_id: str, url: str, *, oauth: bool = False, login=BASIC, **extras) -> CapillaryHook:
    """Define an Airflow connection through the environment (JSON form) and return a fresh hook."""
    extra = dict(extras)
    conn: dict = {"conn_type": "http", "host": url}
    if oauth:
        extra.update(oauth_key=OAUTH[0], oauth_secret=OAUTH[1])
    else:
        conn.update(login=login[0], password=login[1])
    conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    TOKENS.clear()
    reset_registry()
    return CapillaryHook(capillary_conn_id=conn_id)


def unique_mobile() -> str:
    """A valid 12-digit mobile never used before in this test session."""
    return f"91{next(_numbers):010d}"


def element(mobile: str | None = None, *, email: str | None = None, role: str | None = None,
            company: str | None = None, parent_mobile: str | None = None, children: list[str] = (),
            child_role: str | None = None, **overrides) -> dict:
    """A CustomerElement in wire form; association only when a role is given."""
    mobile = mobile or unique_mobile()
    identifiers = [{"type": "mobile", "value": mobile}]
    if email:
        identifiers.append({"type": "email", "value": email})
    body: dict = {
        "profiles": [{"firstName": "Asha", "lastName": "Rao", "identifiers": identifiers, "source": "INSTORE",
                      "commChannels": [{"type": "mobile", "value": mobile, "primary": True, "verified": True}]}],
        "loyaltyInfo": {"loyaltyType": "loyalty"},
    }
    if role:
        details: dict = {"hierarchyCode": HIERARCHY, "roleCode": role}
        if company:
            details["fleetCompany"] = {"externalId": company}
        if parent_mobile:
            details["parentCustomer"] = {"profiles": [{"identifiers": [{"type": "mobile", "value": parent_mobile}]}]}
        if children:
            details["childCustomers"] = [
                {"profiles": [{"firstName": "Kid", "identifiers": [{"type": "mobile", "value": m}]}]} for m in children
            ]
            if child_role:
                details["childRoleCode"] = child_role
        body["associationDetails"] = details
    body.update(overrides)
    return body




def mobile_of(body: dict) -> str:
    """The mobile identifier of an element."""
    return body["profiles"][0]["identifiers"][0]["value"]


def assert_exactly_once(client: CapillaryClient, bodies: list[dict], outcomes) -> None:
    """Every element's customer exists once: its lookup returns the id the bulk call reported."""
    ids = [o.capillary_id for o in outcomes]
    assert all(o.status in ("success", "warning") for o in outcomes), [(o.error_code, o.error_message) for o in outcomes]
    assert len(set(ids)) == len(bodies)
    for body, capillary_id in zip(bodies, ids):
        assert client.lookup_customer("mobile", mobile_of(body)) == capillary_id


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with start_sandbox(tmp_path_factory, "hook") as process:
        yield process


@pytest.fixture
def client(sandbox, monkeypatch):
    return set_connection(monkeypatch, "capillary_test", sandbox.url, **FAST_RETRIES).get_conn()


@pytest.fixture(scope="module")
def fleet_company(sandbox):
    """A company the association tests can use."""
    external_id = f"ACME-{unique_mobile()[-6:]}"
    with pytest.MonkeyPatch.context() as mp:
        outcome, = set_connection(mp, "capillary_setup", sandbox.url, **FAST_RETRIES).get_conn().ensure_companies(
            [company_request(external_id)]
        )
    assert outcome.action == "created", outcome
    return external_id


BURST_RPM = 4


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    """A sandbox allowing 4 requests a minute, its whole budget spent at the start of the module.

    The burst test (last) then waits only the rest of that minute.
    """
    with start_sandbox(tmp_path_factory, "burst", rate_limit_rpm=BURST_RPM) as process:
        with pytest.MonkeyPatch.context() as mp:
            client = set_connection(mp, "capillary_prime_burst", process.url, rate_limit_rpm=60000).get_conn()
            for _ in range(BURST_RPM):
                assert client.get_hierarchies()
        yield process


@pytest.fixture(scope="module", autouse=True)
def _prime_burst(burst):
    """Start the burst sandbox's minute before every other test of this module."""


# --- connection and auth ------------------------------------------------------------------------


def test_basic_authorization_is_login_and_md5_of_password():
    header = basic_authorization("store.server", "server123")
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]).decode() == "store.server:8a16a6b70505eb1f1ff7cdc0cd5559a7"


def test_connection_json_form_with_defaults(monkeypatch):
    hook = set_connection(monkeypatch, "capillary_json", "eu.api.capillarytech.com")
    s = hook.settings
    assert s.base_url == "https://eu.api.capillarytech.com"  # no scheme -> https
    assert (s.rate_limit_rpm, s.concurrency, s.connect_timeout, s.read_timeout) == (100, 2, 5, 30)
    assert (s.batch_size, s.max_retries, s.verify, s.uses_oauth) == (100, 6, True, False)


def test_connection_uri_form_parses_extras_from_text(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CAPILLARY_URI",
        "http://till%40eu:p%40ss%3Aword@127.0.0.1:8123/http?rate_limit_rpm=250&concurrency=4&verify=false"
        "&batch_size=50&attribution_entity_type=TILL_CODE&attribution_entity_code=till01",
    )
    s = CapillaryHook("capillary_uri").settings
    assert s.base_url == "http://127.0.0.1:8123"
    assert (s.login, s.password) == ("till@eu", "p@ss:word")
    assert (s.rate_limit_rpm, s.concurrency, s.batch_size, s.verify) == (250, 4, 50, False)
    assert (s.attribution_entity_type, s.attribution_entity_code) == ("TILL_CODE", "till01")


@pytest.mark.parametrize("verify, expected", [("true", True), ("yes", True), ("false", False), (False, False), (None, True)])
def test_only_an_explicit_false_turns_tls_verification_off(monkeypatch, verify, expected):
    extras = {} if verify is None else {"verify": verify}
    assert set_connection(monkeypatch, "capillary_tls", "https://x.example", **extras).settings.verify is expected


def test_connection_without_credentials_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CAPILLARY_NOAUTH", json.dumps({"conn_type": "http", "host": "https://x.example"}))
    with pytest.raises(ConfigurationError, match="login \\+ password .* or extras oauth_key \\+ oauth_secret"):
        CapillaryHook("capillary_noauth").settings


def test_hook_builds_one_client_and_tests_the_connection(sandbox, monkeypatch):
    hook = set_connection(monkeypatch, "capillary_button", sandbox.url, **FAST_RETRIES)
    client = hook.get_conn()
    assert hook.get_conn() is client and client.settings is hook.settings
    ok, message = hook.test_connection()
    assert ok and message.startswith("Connected: ") and hook.stats.requests == 1
    bad = set_connection(monkeypatch, "capillary_button_bad", sandbox.url, login=("store.server", "wrong"))
    ok, message = bad.test_connection()
    assert not ok and "Invalid till credentials" in message
    hook.close()


def test_basic_auth_reads_the_hierarchies(client):
    definitions = {d.code: d for d in client.get_hierarchies()}
    chain = definitions[HIERARCHY]
    assert [chain.role(c).childRoleCode for c in ("GFA", "SFA", "FA")] == ["SFA", "FA", "FC"]


def test_wrong_password_fails_at_once(sandbox, monkeypatch):
    client = set_connection(monkeypatch, "capillary_bad", sandbox.url, login=("store.server", "wrong"), **FAST_RETRIES).get_conn()
    with pytest.raises(CapillaryAuthError, match="Invalid till credentials.*Check the Capillary connection"):
        client.get_hierarchies()
    assert client.stats.requests == 1  # a contract error is not retried


def test_wrong_oauth_secret_fails_clearly(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CAPILLARY_BADKEY", json.dumps({
        "conn_type": "http", "host": sandbox.url, "extra": {"oauth_key": "demo-key", "oauth_secret": "nope"}}))
    TOKENS.clear()
    with pytest.raises(CapillaryAuthError, match="refused to generate an OAuth token"):
        CapillaryHook("capillary_badkey").get_conn().get_hierarchies()


def test_oauth_token_is_reused_refreshed_before_expiry_and_after_a_401(tmp_path_factory, monkeypatch):
    with start_sandbox(tmp_path_factory, "ttl", token_ttl=2) as sandbox:
        client = set_connection(monkeypatch, "capillary_oauth", sandbox.url, oauth=True, **FAST_RETRIES).get_conn()
        client.get_hierarchies()
        client.get_hierarchies()
        assert sandbox.stats()["tokensIssued"] == 1  # cached per worker process

        time.sleep(2.1)  # the token's lifetime is over: a new one is generated before the call
        client.get_hierarchies()
        assert sandbox.stats()["tokensIssued"] == 2

        # A token the client still believes in but the server has expired (clocks disagree):
        # the call gets a 401, a new token is generated and the call is repeated once.
        key = (client.settings.base_url, "demo-key")
        TOKENS.store(key, TOKENS.valid(key), 3600)
        time.sleep(2.1)
        assert client.get_hierarchies()
        stats = sandbox.stats()
        assert stats["tokensIssued"] == 3
        assert stats["requests"]["GET /v2/fleetHierarchy/all"]["401"] == 1


# --- bulk ------------------------------------------------------------------------------------


def test_bulk_registers_and_a_resend_returns_the_same_ids(client):
    bodies = [element(email=f"asha{i}.{unique_mobile()}@example.com") for i in range(5)]
    first = client.post_customers_bulk(bodies)
    assert_exactly_once(client, bodies, first)
    second = client.post_customers_bulk(bodies)
    assert [o.capillary_id for o in second] == [o.capillary_id for o in first]
    assert all(o.attempts == 1 for o in second)
    assert client.lookup_customer("mobile", unique_mobile()) is None


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    with start_sandbox(tmp_path_factory, "faulty") as process:
        yield process


@pytest.mark.parametrize("kind", ["500", "502", "503", "drop", "slow", "commit500"])
def test_every_fault_kind_is_retried_without_duplicates(faulty, monkeypatch, kind):
    faulty.restart(faults=f"{kind}=0.5", fault_seed=11, slow_ms=1200)
    client = set_connection(monkeypatch, "capillary_faulty", faulty.url, batch_size=3, read_timeout=0.5,
                            connect_timeout=2, **FAST_RETRIES).get_conn()
    bodies = [element() for _ in range(12)]
    outcomes = client.post_customers_bulk(bodies)
    assert faulty.stats()["faults"].get(kind, 0) >= 1
    counter = {"drop": "dropped", "slow": "timeouts"}.get(kind, "server_errors")
    assert getattr(client.stats, counter) >= 1  # slow: the answer came after the read timeout
    assert any(o.attempts > 1 for o in outcomes)
    faulty.restart(faults="")  # lookups without faults
    assert_exactly_once(client, bodies, outcomes)


def test_commit_then_500_does_not_duplicate_a_customer(faulty, monkeypatch):
    faulty.restart(faults="commit500=1.0")
    client = set_connection(monkeypatch, "capillary_commit", faulty.url, **dict(FAST_RETRIES, max_retries=2)).get_conn()
    bodies = [element(), element()]
    outcomes = client.post_customers_bulk(bodies)
    # Every answer was a 500, but the server had stored the customers each time.
    assert all(o.status == "failed" and o.attempts == 3 for o in outcomes)
    faulty.restart(faults="")
    stored = [client.lookup_customer("mobile", mobile_of(b)) for b in bodies]
    assert None not in stored
    again = client.post_customers_bulk(bodies)
    assert [o.capillary_id for o in again] == stored
    assert_exactly_once(client, bodies, again)


def test_batch_limit_1060_halves_the_batch_and_goes_on(tmp_path_factory, monkeypatch):
    with start_sandbox(tmp_path_factory, "small", batch_limit=4) as sandbox:
        client = set_connection(monkeypatch, "capillary_small", sandbox.url, batch_size=10, **FAST_RETRIES).get_conn()
        bodies = [element() for _ in range(10)]
        outcomes = client.post_customers_bulk(bodies)
        assert_exactly_once(client, bodies, outcomes)
        assert client.batch_limit <= 4
        refused = sandbox.stats()["requests"]["POST /v2/customers/bulk"].get("400", 0)
        assert refused == 2  # 10 -> 5 refused, then batches of 2 fit


def test_a_poisoned_element_is_bisected_out_and_the_rest_goes_through(client):
    bodies = [element() for _ in range(8)]
    bodies[5]["loyaltyInfo"] = "x"  # a wrong type: HTTP 400 for the whole request
    outcomes = client.post_customers_bulk(bodies)
    bad = outcomes[5]
    assert bad.status == "failed" and bad.error_code == 400 and "loyaltyInfo" in bad.error_message
    assert bad.attempts == 4  # 8 -> 4 -> 2 -> 1
    good = [o for i, o in enumerate(outcomes) if i != 5]
    assert_exactly_once(client, [b for i, b in enumerate(bodies) if i != 5], good)
    assert client.lookup_customer("mobile", mobile_of(bodies[5])) is None


def test_a_batch_where_every_element_fails_maps_each_error(client):
    old = "1985-01-01T00:00:00+00:00"
    bodies = [element(), element()]
    for body in bodies:
        body["profiles"][0]["createDate"] = old
    outcomes = client.post_customers_bulk(bodies)
    assert [(o.status, o.error_code) for o in outcomes] == [("failed", 1034), ("failed", 1034)]
    assert all(o.attempts == 1 for o in outcomes)  # "all failed" is an answer, not an outage
    assert "createDate" in outcomes[0].error_message


def test_parent_with_children_maps_child_outcomes_in_order(client, fleet_company):
    kids = [unique_mobile(), unique_mobile()]
    admin = element(role="FA", company=fleet_company, children=kids, child_role="FC")
    outcome, = client.post_customers_bulk([admin])
    assert outcome.status == "success"
    assert (outcome.child_count, outcome.child_success_count, outcome.child_failure_count) == (2, 2, 0)
    assert [c.capillary_id for c in outcome.children] == [client.lookup_customer("mobile", m) for m in kids]
    details = client.customer_details("mobile", kids[1])
    assert details["associationDetails"]["parentCustomerId"] == outcome.capillary_id
    assert details["associationDetails"]["roleCode"] == "FC"

    # A customer naming an unknown company fails alone (1704); its neighbour in the batch is fine.
    member = element(role="FC", company=fleet_company, parent_mobile=mobile_of(admin))
    stray = element(role="FC", company=f"NO-SUCH-{unique_mobile()}")
    ok, refused = client.send_customers([member, stray])
    assert ok.status == "success" and (refused.status, refused.error_code) == ("failed", 1704)


def test_registration_keeps_details_an_update_changes_them_and_a_role_cannot_move(client, fleet_company):
    body = element(role="FA", company=fleet_company)
    registered, = client.send_customers([body])
    assert registered.status == "success" and registered.method == "POST"

    renamed = dict(body, profiles=[dict(body["profiles"][0], firstName="Asha Kumari")])
    kept, = client.send_customers([renamed])
    assert kept.details_kept and kept.status == "warning" and kept.capillary_id == registered.capillary_id
    assert client.customer_details("mobile", mobile_of(body))["profiles"][0]["firstName"] == "Asha"

    updated, = client.send_customers([renamed], update=True, source="INSTORE")
    assert (updated.status, updated.method, updated.details_kept) == ("success", "PUT", False), updated
    assert client.customer_details("mobile", mobile_of(body))["profiles"][0]["firstName"] == "Asha Kumari"

    moved = dict(renamed, associationDetails=dict(renamed["associationDetails"], roleCode="FC"))
    refused, = client.send_customers([moved], update=True)
    assert (refused.status, refused.error_code) == ("failed", 1627)


def test_an_unregistered_parent_is_registered_with_its_child(client, fleet_company):
    parent = unique_mobile()
    child, = client.send_customers([element(role="FC", company=fleet_company, parent_mobile=parent)])
    assert child.status == "success", child
    assert client.lookup_customer("mobile", parent) is not None


# --- companies ---------------------------------------------------------------------------------


def test_companies_are_created_parents_first_then_kept_or_updated(client):
    tag = unique_mobile()[-7:]
    holding, subsidiary = f"HOLD-{tag}", f"SUB-{tag}"
    first = client.ensure_companies([company_request(subsidiary, parent=holding), company_request(holding)])
    assert [(o.external_id, o.action) for o in first] == [(subsidiary, "created"), (holding, "created")]
    assert client.get_company(subsidiary)["parentCompany"]["externalId"] == holding

    again = client.ensure_companies([company_request(holding), company_request(subsidiary, parent=holding)])
    assert [o.action for o in again] == ["unchanged", "unchanged"]
    assert [o.company_id for o in again] == [first[1].company_id, first[0].company_id]

    # The sync state knows the companies now: a change is one PUT.
    state = {o.external_id: o.company_id for o in first}
    changed = client.ensure_companies([company_request(holding, name="Acme Holding", region="south")], known_ids=state)
    assert changed[0].action == "updated"
    assert client.get_company(holding)["extendedFields"] == {"region": "south"}

    moved = dict(company_request(holding, name="Acme Holding", region="south"), hierarchyDefinitionCode="other")
    failed, = client.ensure_companies([moved], known_ids=state)
    assert failed.action == "failed" and "cannot change" in failed.error_message


def test_company_cycles_and_failed_parents_fail_without_calls(client):
    tag = unique_mobile()[-7:]
    outcomes = client.ensure_companies([
        company_request(f"A-{tag}", parent=f"B-{tag}"),
        company_request(f"B-{tag}", parent=f"A-{tag}"),
        dict(company_request(f"BAD-{tag}"), hierarchyDefinitionCode="no-such-hierarchy"),
        company_request(f"KID-{tag}", parent=f"BAD-{tag}"),
    ])
    by_id = {o.external_id: o for o in outcomes}
    assert "cycle" in by_id[f"A-{tag}"].error_message and "cycle" in by_id[f"B-{tag}"].error_message
    assert by_id[f"BAD-{tag}"].action == "failed" and by_id[f"BAD-{tag}"].error_code is not None
    assert by_id[f"KID-{tag}"].action == "failed" and f"BAD-{tag}" in by_id[f"KID-{tag}"].error_message
    assert by_id[f"KID-{tag}"].attempts == 0


def test_server_messages_are_masked_in_outcomes():
    result = {"entity": None, "errors": [{"code": 1032, "message": "mobile 919876543210 already used by a.b@example.com"}],
              "warnings": [{"code": 8056, "message": "Invalid mobile 4412345678901, ignored"}]}
    outcome = customer_outcome(result)
    assert outcome.status == "failed" and outcome.error_code == 1032
    assert "919876543210" not in outcome.error_message and "a.b@example.com" not in outcome.error_message
    assert outcome.error_message == "mobile 91******3210 already used by a**@example.com"
    assert outcome.warnings == [{"code": 8056, "message": "Invalid mobile 44*******8901, ignored"}]


# --- logs ------------------------------------------------------------------------------------


def test_logs_carry_no_secrets_and_no_raw_mobiles_or_emails(sandbox, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    email = f"leak.{unique_mobile()}@example.com"
    bodies = [element(email=email), element()]
    bodies[1]["loyaltyInfo"] = {"loyaltyType": email}  # a 400 whose message may echo the value
    basic = set_connection(monkeypatch, "capillary_logs", sandbox.url, **FAST_RETRIES).get_conn()
    basic.post_customers_bulk(bodies)
    basic.lookup_customer("email", email)
    basic.lookup_customer("mobile", mobile_of(bodies[0]))
    oauth = set_connection(monkeypatch, "capillary_logs_oauth", sandbox.url, oauth=True, **FAST_RETRIES).get_conn()
    oauth.get_hierarchies()
    token = TOKENS.valid((oauth.settings.base_url, "demo-key"))
    text = caplog.text + "".join(capsys.readouterr())
    assert "Generated a Capillary OAuth token" in text  # the logs were captured
    for secret in ("server123", "8a16a6b70505eb1f1ff7cdc0cd5559a7", basic_authorization(*BASIC)[6:],
                   "demo-secret", token, email, mobile_of(bodies[0]), mobile_of(bodies[1])):
        assert secret not in text


# --- rate limit (last: the burst sandbox's minute started with the module) ---------------------------


def test_a_429_wait_past_the_bound_raises_for_the_task_to_retry(burst, monkeypatch):
    # The burst sandbox's budget is spent: its Retry-After is longer than this task may wait.
    from associate.exceptions import CapillaryThrottled

    client = set_connection(monkeypatch, "capillary_bound", burst.url, **FAST_RETRIES, max_throttle_wait=1).get_conn()
    before = burst.stats()
    started = time.monotonic()
    with pytest.raises(CapillaryThrottled, match="bound of 1 s"):
        client.send_customers([element()])
    assert time.monotonic() - started < 5  # no wait, and no customer recorded as failed: an exception
    after = burst.stats()
    assert after["rateLimited"] - before["rateLimited"] == 1 and after["elements"] == before["elements"]


def test_a_burst_over_the_budget_waits_and_stores_every_customer(burst, monkeypatch, caplog):
    # The client believes in 60000 rpm and may not retry at all: the server's 429 must rule,
    # and only waiting (Retry-After, not a retry) can save the burst.
    extras = {**FAST_RETRIES, "max_retries": 0, "batch_size": 2}
    client = set_connection(monkeypatch, "capillary_burst", burst.url, **extras).get_conn()
    bodies = [element() for _ in range(2 * BURST_RPM)]
    before = burst.stats()
    with caplog.at_level(logging.WARNING, logger="associate.capillary.transport"):
        outcomes = client.send_customers(bodies)
    assert [o.status for o in outcomes] == ["success"] * len(bodies), [(o.error_code, o.error_message) for o in outcomes]
    assert len({o.capillary_id for o in outcomes}) == len(bodies)
    assert client.stats.throttled >= 1 and client.stats.retries == 0
    stats = burst.stats()
    # While Retry-After ran, nobody knocked again: every 429 the server gave was one the client waited out.
    assert stats["rateLimited"] - before["rateLimited"] == client.stats.throttled
    assert stats["elements"]["succeeded"] - before["elements"]["succeeded"] == len(bodies)
    assert stats["elements"]["failed"] == before["elements"]["failed"]
    waits = [r.getMessage() for r in caplog.records if "HTTP 429; waiting" in r.getMessage()]
    assert waits and "of at most 900 s" in waits[0]
