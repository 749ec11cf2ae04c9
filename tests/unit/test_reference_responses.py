"""The reference's sample responses, fed to the client, give the right outcome rows and warnings.

A loopback HTTP server in this process replays the fixtures of ``tests/fixtures/reference/``
(the reference's samples, see its README) one reply per request, and records what the client
sent; the client runs unchanged over real HTTP. Replies that are not a reference sample
(the error bodies, the variants of a sample) say so where they are built.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from associate.capillary.client import CapillaryClient
from associate.capillary.outcomes import DETAILS_KEPT
from associate.capillary.budget import reset_registry
from associate.capillary.settings import ClientSettings

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


def sample(name: str):
    """A reference sample, parsed (a fresh copy each time)."""
    return json.loads((REFERENCE / name).read_text())


def error(code: int, message: str) -> dict:
    """A whole-request error body as the reference shows them (not a sample: built here)."""
    return {"errors": [{"status": False, "code": code, "message": message}]}


class Replay(ThreadingHTTPServer):
    """A loopback server answering queued ``(status, body)`` replies in order; it records every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ReplayHandler)
        self.replies: list[tuple[int, object]] = []
        self.requests: list[dict] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, *replies: tuple[int, object]) -> None:
        """Queue replies for the next requests."""
        self.replies.extend(replies)

    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request so far."""
        return [(r["method"], r["path"]) for r in self.requests]


class _ReplayHandler(BaseHTTPRequestHandler):
    def _reply(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": url.path,
                                     "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                                     "body": json.loads(raw) if raw else None})
        status, body = self.server.replies.pop(0) if self.server.replies else (599, {"errors": []})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _reply

    def log_message(self, *args) -> None:  # no access log on stderr
        pass


@pytest.fixture
def replay():
    server = Replay()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(replay):
    reset_registry()
    settings = ClientSettings(base_url=replay.url, login="store.server", password="server123", rate_limit_rpm=60000,
                              max_retries=2, backoff_base=0.01, backoff_max=0.02)
    with CapillaryClient(settings) as client:
        yield client


# --- customers bulk: POST -------------------------------------------------------------------------


def test_bulk_post_sample_gives_the_customer_its_children_their_counts_and_warnings(replay, client):
    request = sample("customers_bulk_post_child_with_parent.request.json")
    replay.answer((200, sample("customers_bulk_post.response.json")))
    outcome, = client.send_customers(request)
    sent = replay.requests[0]
    assert (sent["method"], sent["path"], sent["query"]) == ("POST", "/v2/customers/bulk", {"source": "INSTORE"})
    assert sent["body"] == request
    assert (outcome.status, outcome.capillary_id, outcome.error_code, outcome.method) == (
        "warning", 409966467, None, "POST")
    assert outcome.warnings == [{"code": 19223, "message": "Points processing failed"}]
    assert not outcome.details_kept  # the names answered are the ones sent
    assert (outcome.child_count, outcome.child_success_count, outcome.child_failure_count) == (2, 2, 0)
    assert [(c.status, c.capillary_id) for c in outcome.children] == [("warning", 409966468), ("warning", 409966469)]
    assert [w["code"] for w in outcome.children[0].warnings] == [8056, 8058, 19223]
    assert outcome.attempts == 1


def test_bulk_post_query_carries_source_and_account(replay, client):
    replay.answer((200, sample("customers_bulk_post.response.json")))
    client.send_customers(sample("customers_bulk_post_child_with_parent.request.json"), source="WECHAT",
                          account_id="WECHAT-CM")
    assert replay.requests[0]["query"] == {"source": "WECHAT", "accountId": "WECHAT-CM"}


@pytest.mark.parametrize("field, value, expected", [
    ("roleCode", "FC", "Capillary answered association roleCode=FA but we sent roleCode=FC"),
    ("hierarchyCode", "other-hierarchy",
     "Capillary answered association hierarchyCode=code-association2 but we sent hierarchyCode=other-hierarchy"),
    ("fleetCompany", {"externalId": "ACME-1"},
     "Capillary answered association fleetCompany.externalId=ex917471949194 but we sent fleetCompany.externalId=ACME-1"),
])
def test_an_answered_association_other_than_the_one_sent_is_a_warning(replay, client, field, value, expected):
    request = sample("customers_bulk_post_child_with_parent.request.json")
    request[0]["associationDetails"][field] = value  # the variant: we sent another association than answered
    replay.answer((200, sample("customers_bulk_post.response.json")))
    outcome, = client.send_customers(request)
    assert outcome.status == "warning" and outcome.capillary_id == 409966467
    assert {"code": None, "message": expected} in outcome.warnings


def test_a_post_answered_with_other_names_keeps_them_and_says_so(replay, client):
    request = sample("customers_bulk_post_child_with_parent.request.json")
    request[0]["profiles"][0]["lastName"] = "Sawyer"  # the sample answers the stored "Customer"
    replay.answer((200, sample("customers_bulk_post.response.json")))
    outcome, = client.send_customers(request)
    assert outcome.details_kept and outcome.status == "warning"
    assert {"code": None, "message": DETAILS_KEPT} in outcome.warnings
    assert "registration does not change them: the next run sends them as an update" in DETAILS_KEPT


# --- customers bulk: PUT --------------------------------------------------------------------------


def test_bulk_put_sample_is_a_success_without_an_id_and_its_empty_error_is_none(replay, client):
    request = sample("customers_bulk_put.request.json")
    replay.answer((200, sample("customers_bulk_put.response.json")))
    outcome, = client.send_customers(request, update=True, source="WECHAT", account_id="WECHAT-CM")
    sent = replay.requests[0]
    assert (sent["method"], sent["query"], sent["body"]) == (
        "PUT", {"source": "WECHAT", "accountId": "WECHAT-CM"}, request)
    # "errors": [{}] is no error; the reference's PUT answer carries no customer id.
    assert (outcome.status, outcome.capillary_id, outcome.error_code, outcome.warnings) == ("success", None, None, [])
    assert outcome.method == "PUT" and not outcome.details_kept and len(replay.requests) == 1


def test_a_put_answered_8015_is_registered_by_post_in_the_same_call(replay, client):
    put = sample("customers_bulk_put.request.json")
    post = sample("customers_bulk_post_child_with_parent.request.json")
    # Not a sample: the PUT answer for one customer updated and one unknown (8015).
    replay.answer((200, [sample("customers_bulk_put.response.json")[0],
                         error(8015, "No customer found with the given identifier")]),
                  (200, sample("customers_bulk_post.response.json")))
    updated, registered = client.send_customers(put + post, update=True, source="WECHAT", account_id="WECHAT-CM")
    assert replay.calls() == [("PUT", "/v2/customers/bulk"), ("POST", "/v2/customers/bulk")]
    assert replay.requests[1]["body"] == post and replay.requests[1]["query"] == replay.requests[0]["query"]
    assert (updated.status, updated.method, updated.attempts) == ("success", "PUT", 1)
    assert (registered.status, registered.method, registered.capillary_id, registered.attempts) == (
        "warning", "POST", 409966467, 2)
    assert registered.error_code is None and registered.child_count == 2


# --- customers bulk: whole-request answers, decided by code ----------------------------------------

ALL_FAILED = error(500, "All requests failed due to errors")


def test_a_bare_all_failed_500_is_bisected_to_single_elements(replay, client):
    elements = sample("customers_bulk_post_child_with_parent.request.json") * 3
    replay.answer(*[(500, ALL_FAILED)] * 5)  # 3 -> 1 + 2 -> 1 + 1
    outcomes = client.send_customers(elements)
    assert [(o.status, o.error_code) for o in outcomes] == [("failed", 500)] * 3
    assert [o.error_message for o in outcomes] == ["All requests failed due to errors"] * 3
    assert len(replay.requests) == 5 and client.stats.server_errors == 0  # an answer, not an outage


def test_a_500_internal_server_error_is_an_outage_and_retried(replay, client):
    replay.answer((500, error(500, "Internal server error")), (200, sample("customers_bulk_post.response.json")))
    outcome, = client.send_customers(sample("customers_bulk_post_child_with_parent.request.json"))
    assert (outcome.status, outcome.attempts, client.stats.server_errors) == ("warning", 2, 1)


@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_a_500_with_per_element_results_maps_each_element_whatever_the_status(replay, client, status):
    elements = sample("customers_bulk_post_child_with_parent.request.json") * 2
    body = dict(ALL_FAILED, response=[error(1704, "Company does not exist with given ID/externalID ex9"),
                                      error(1627, "Customer fleet user role can't be changed.")])
    replay.answer((status, body))
    outcomes = client.send_customers(elements)
    assert [(o.status, o.error_code) for o in outcomes] == [("failed", 1704), ("failed", 1627)]
    assert len(replay.requests) == 1


@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_batch_limit_1060_halves_whatever_the_status(replay, client, status):
    elements = sample("customers_bulk_post_child_with_parent.request.json") * 2
    one = sample("customers_bulk_post.response.json")
    replay.answer((status, error(1060, "Batch limit exceeded")), (200, one), (200, one))
    outcomes = client.send_customers(elements)
    assert [o.status for o in outcomes] == ["warning", "warning"] and client.batch_limit == 1


@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_an_invalid_input_is_bisected_out_whatever_the_status(replay, client, status):
    elements = sample("customers_bulk_post_child_with_parent.request.json") * 2
    replay.answer((status, error(400, "Invalid input : loyaltyInfo")), (200, sample("customers_bulk_post.response.json")),
                  (status, error(400, "Invalid input : loyaltyInfo")))
    good, bad = client.send_customers(elements)
    assert good.status == "warning" and (bad.status, bad.error_code) == ("failed", 400)


# --- lookup ---------------------------------------------------------------------------------------


def test_lookup_sample_answers_the_customer_id(replay, client):
    replay.answer((200, sample("customers_lookup.response.json")))
    assert client.lookup_customer("mobile", "919111111111", source="INSTORE") == 306
    assert replay.requests[0]["query"] == {"source": "INSTORE", "identifierName": "mobile",
                                           "identifierValue": "919111111111"}


def test_lookup_details_sample_is_returned_as_answered(replay, client):
    replay.answer((200, sample("customers_lookup_details.response.json")))
    assert client.customer_details("mobile", "919111111111")["id"] == 481220846


@pytest.mark.parametrize("status", [200, 400, 404, 500])
@pytest.mark.parametrize("code", [8015, 8065])
def test_an_unknown_customer_is_none_by_code_whatever_the_status(replay, client, status, code):
    replay.answer((status, error(code, "No customer found with the given identifier.")))
    assert client.lookup_customer("mobile", "919111111111") is None


# --- companies ------------------------------------------------------------------------------------


def test_a_new_company_is_one_post_and_the_add_sample_empty_warning_is_none(replay, client):
    request = sample("companies_post_parent.request.json")
    replay.answer((200, sample("companies_post.response.json")))
    outcome, = client.ensure_companies([request])
    assert replay.calls() == [("POST", "/v2/companies")] and replay.requests[0]["body"] == request
    # The sample answers "warnings": [{}]: no warning row.
    assert (outcome.action, outcome.company_id, outcome.warnings, outcome.status) == ("created", 98, [], "success")


@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_company_exists_1702_is_settled_by_a_get(replay, client, status):
    request = sample("companies_post_parent.request.json")
    stored = sample("companies_get.response.json")
    request["extendedFields"] = stored["extendedFields"]  # the variant: what the sample GET answers
    replay.answer((status, error(1702, "Company externalID Purple2345 already exists.")), (200, stored))
    outcome, = client.ensure_companies([request])
    assert replay.calls() == [("POST", "/v2/companies"), ("GET", "/v2/companies")]
    assert (outcome.action, outcome.company_id, outcome.error_code) == ("unchanged", 98, None)


def test_a_known_company_is_one_put_and_the_update_sample_gives_no_warning(replay, client):
    request = sample("companies_post_parent.request.json")
    replay.answer((200, sample("companies_put.response.json")))
    outcome, = client.ensure_companies([request], known_ids={"Purple2345": 98})
    assert replay.calls() == [("PUT", "/v2/companies")]
    assert replay.requests[0]["query"] == {"externalId": "Purple2345"} and "parentCompany" not in replay.requests[0]["body"]
    assert (outcome.action, outcome.company_id, outcome.warnings, outcome.status) == ("updated", 98, [], "success")


@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_a_known_company_answered_1704_is_created_by_post(replay, client, status):
    request = sample("companies_post_parent.request.json")
    replay.answer((status, error(1704, "Company does not exist with given ID/externalID Purple2345")),
                  (200, sample("companies_post.response.json")))
    outcome, = client.ensure_companies([request], known_ids={"Purple2345": 7})
    assert replay.calls() == [("PUT", "/v2/companies"), ("POST", "/v2/companies")]
    assert (outcome.action, outcome.company_id) == ("created", 98)


def test_an_inactive_company_is_a_1705_warning_when_fetched_and_fails_its_update(replay, client):
    request = sample("companies_post_parent.request.json")
    stored = dict(sample("companies_get.response.json"), isActive=False)  # the variant: a deleted company
    request["extendedFields"] = stored["extendedFields"]
    replay.answer((400, error(1702, "Company externalID Purple2345 already exists.")), (200, stored))
    outcome, = client.ensure_companies([request])
    assert (outcome.action, outcome.status, [w["code"] for w in outcome.warnings]) == ("unchanged", "warning", [1705])
    replay.answer((400, error(1705, "Fleet company is inactive.")))
    outcome, = client.ensure_companies([request], known_ids={"Purple2345": 98})
    assert (outcome.action, outcome.error_code) == ("failed", 1705) and "inactive" in outcome.error_message


def test_company_get_sample_is_returned_as_answered(replay, client):
    replay.answer((200, sample("companies_get.response.json")))
    company = client.get_company("Purple2345")
    assert (company["companyId"], company["isActive"]) == (98, True)


@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_parent_company_missing_1703_fails_the_company_with_its_code(replay, client, status):
    request = sample("companies_post_child.request.json")
    replay.answer((status, error(1703, "Parent company externalID 917904511111 does not exist.")))
    outcome, = client.ensure_companies([request])
    assert (outcome.action, outcome.error_code, outcome.status) == ("failed", 1703, "failed")
    assert "Parent company externalID" in outcome.error_message


@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_a_known_company_in_another_hierarchy_fails_with_1711_from_the_put(replay, client, status):
    request = dict(sample("companies_post_parent.request.json"), hierarchyDefinitionCode="code-tst1111")
    replay.answer((status, error(1711, "Fleet hierarchy update is not allowed.")))
    outcome, = client.ensure_companies([request], known_ids={"Purple2345": 98})
    assert replay.calls() == [("PUT", "/v2/companies")]
    assert (outcome.action, outcome.error_code) == ("failed", 1711) and "cannot change" in outcome.error_message


def test_an_unknown_company_in_another_hierarchy_fails_with_1711_from_the_get(replay, client):
    request = dict(sample("companies_post_parent.request.json"), hierarchyDefinitionCode="code-tst1111")
    replay.answer((400, error(1702, "Company externalID Purple2345 already exists.")),
                  (200, sample("companies_get.response.json")))
    outcome, = client.ensure_companies([request])
    assert replay.calls() == [("POST", "/v2/companies"), ("GET", "/v2/companies")]
    assert (outcome.action, outcome.error_code) == ("failed", 1711) and "cannot change" in outcome.error_message


# --- fleet hierarchies ----------------------------------------------------------------------------


def test_hierarchy_get_sample_is_read_with_its_role_chain(replay, client):
    replay.answer((200, sample("fleet_hierarchy_get.response.json")))
    definition = client.get_hierarchy(hierarchy_id=22)
    assert replay.requests[0]["path"] == "/v2/fleetHierarchy" and replay.requests[0]["query"] == {"id": "22"}
    assert (definition.id, definition.code, definition.isActive, definition.skipRoleAllowed) == (
        22, "code-association11", True, False)
    assert [definition.role(c).childRoleCode for c in ("GFA", "SFA", "FA")] == ["SFA", "FA", "FC"]
    assert definition.role("FA").maxChild == 1000 and definition.parent_role_of("FC").code == "FA"


@pytest.mark.parametrize("status", [200, 400, 404])
def test_an_unknown_hierarchy_is_none_by_code_1609(replay, client, status):
    replay.answer((status, error(1609, "Fleet hierarchy ID/code 99 is invalid.")))
    assert client.get_hierarchy(hierarchy_id=99) is None


def test_hierarchies_sample_is_read_with_names_missing_and_active_flags(replay, client):
    replay.answer((200, sample("fleet_hierarchy_all.response.json")))
    definitions = client.get_hierarchies()
    assert [(d.id, d.isActive) for d in definitions] == [(1, False), (3, False), (4, False), (5, False), (7, False),
                                                         (44, True)]
    assert definitions[1].name is None  # the sample's definition 3 has no name: read all the same
    assert definitions[-1].skipRoleAllowed and definitions[-1].role("GFA").childRoleCode == "SFA"


def test_an_inactive_hierarchy_is_read_from_the_answered_active_flag(replay, client):
    answer = copy.deepcopy(sample("fleet_hierarchy_get.response.json"))
    answer["active"] = False  # the variant: the reference spells the flag "active"
    replay.answer((200, answer))
    assert client.get_hierarchy(code="code-association11").isActive is False
    assert replay.requests[0]["query"] == {"code": "code-association11"}
