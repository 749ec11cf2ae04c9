"""``--error-form``: the same error answered in every HTTP form a client may meet (docs/sandbox.md,
"Error forms"). The code is the same in every form; only the status and the body's shape change."""

from __future__ import annotations

import pytest

from associate.sandbox.config import ERROR_FORMS
from sandbox_support import HIERARCHY, SandboxClient, element, error_codes, new_key, sandbox_in_form

# (documented status, status in each other form) of a single-resource error.
SINGLE_STATUS = {"400": 400, "404": 404, "200": 200, "500": 500, "500-bare": 500}


@pytest.fixture(scope="module", params=ERROR_FORMS)
def sandbox(request, tmp_path_factory):
    yield from sandbox_in_form(request.param, tmp_path_factory)


@pytest.fixture
def client(sandbox):
    return SandboxClient(sandbox.url)


def assert_error(response, form: str, documented_status: int, code: int) -> None:
    expected = documented_status if form == "documented" else SINGLE_STATUS[form]
    assert response.status_code == expected, response.text
    body = response.json()
    assert body["errors"] == [{"status": False, "code": code, "message": body["errors"][0]["message"]}]
    assert body["errors"][0]["message"]
    if form == "200":
        assert body["entity"] is None and body["warnings"] == []


def test_company_missing_get_is_1704(sandbox, client):
    assert_error(client.get("/v2/companies", params={"externalId": "nope"}), sandbox.form, 404, 1704)


def test_company_exists_post_is_1702(sandbox, client):
    key = new_key("C")
    body = {"name": "x", "externalId": key, "hierarchyDefinitionCode": HIERARCHY}
    assert client.post("/v2/companies", body).status_code == 200
    assert_error(client.post("/v2/companies", body), sandbox.form, 400, 1702)


def test_parent_missing_post_is_1703(sandbox, client):
    body = {"name": "x", "externalId": new_key("C"), "hierarchyDefinitionCode": HIERARCHY,
            "parentCompany": {"externalId": "nope"}}
    assert_error(client.post("/v2/companies", body), sandbox.form, 400, 1703)


def test_hierarchy_missing_get_is_1609(sandbox, client):
    assert_error(client.get("/v2/fleetHierarchy", params={"id": 999999}), sandbox.form, 404, 1609)


def test_whole_request_errors_follow_the_form(sandbox, client):
    assert_error(client.post("/v2/customers/bulk", {"not": "an array"}), sandbox.form, 400, 400)


def test_all_failed_bulk_call(sandbox, client):
    response = client.post("/v2/customers/bulk", [element("1"), element(email="x")])
    form = sandbox.form
    if form == "500-bare":
        assert response.status_code == 500
        assert response.json() == {"errors": [{"status": False, "code": 500,
                                               "message": "All requests failed due to errors"}]}
        return
    assert response.status_code == (500 if form == "500" else 200), response.text
    results = response.json()
    assert isinstance(results, list) and len(results) == 2
    assert all(r["entity"] is None and error_codes(r) for r in results)


def test_a_partly_failed_bulk_call_is_200_in_every_form(client):
    response = client.post("/v2/customers/bulk", [element("1"), element()])
    assert response.status_code == 200
    assert [bool(r["errors"]) for r in response.json()] == [True, False]
