"""The reference's own sample requests of the customer calls are accepted by the sandbox, and its
answers carry the fields of the reference's sample responses (tests/fixtures/reference/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from associate.sandbox.launcher import SandboxProcess
from sandbox_support import SandboxClient

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reference"
MIN_PATH_COVERAGE = 0.8


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def field_paths(node, prefix: str = "") -> set[str]:
    """Every JSON field path of a document, arrays written ``[]``: ``entity.profiles[].userId``."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            found.add(path)
            found |= field_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            found |= field_paths(item, prefix + "[]")
    return found


def coverage(reference, answer) -> tuple[float, set[str]]:
    """The share of the reference's field paths the answer has, and the ones it lacks."""
    wanted = field_paths(reference)
    missing = wanted - field_paths(answer)
    return 1 - len(missing) / len(wanted), missing


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # A sandbox of its own: the samples use fixed mobiles, so they must meet an empty store.
    db = tmp_path_factory.mktemp("reference") / "sandbox.db"
    with SandboxProcess(db) as sandbox:
        client = SandboxClient(sandbox.url)
        for company in ("ex917471949194", "ex91747000000", "ex917471000000"):
            client.company(company)
        yield client


@pytest.fixture(scope="module")
def child_with_parent(client):
    """The answer to "Sample POST Request (Associate Child with Parent)"."""
    response = client.post("/v2/customers/bulk?source=WECHAT&accountId=WECHAT-CM",
                           fixture("customers_bulk_post_child_with_parent.request.json"))
    assert response.status_code == 200, response.text
    return response.json()


def test_associate_child_with_parent_sample_is_accepted(client, child_with_parent):
    result, = child_with_parent
    assert result["errors"] == [] and result["entity"]["id"]
    assert (result["childCount"], result["childSuccessCount"], result["childFailureCount"]) == (2, 2, 0)
    association = result["entity"]["associationDetails"]
    assert (association["roleCode"], association["childRoleCode"]) == ("FA", "FC")
    assert association["fleetCompany"]["externalId"] == "ex917471949194"
    for child, mobile in zip(result["childEntities"], ("917979000002", "917979000003")):
        assert child["associationDetails"]["roleCode"] == "FC"
        assert child["associationDetails"]["parentCustomerId"] == result["entity"]["id"]
        assert client.lookup("mobile", mobile) == child["id"]
    card = next(i for i in result["entity"]["profiles"][0]["identifiers"] if i["type"] == "cardnumber")
    assert (card["seriesCode"], card["statusLabel"]) == ("FleetCard1", "ACTIVE")


def test_answer_has_the_sample_responses_field_paths(child_with_parent):
    share, missing = coverage(fixture("customers_bulk_post.response.json"), child_with_parent)
    assert share >= MIN_PATH_COVERAGE, sorted(missing)
    for path in ("[].entity.profiles[].attribution.createdBy.code", "[].entity.profiles[].identifiersAll[].value",
                 "[].entity.profiles[].commChannels[].meta.residence", "[].entity.associationDetails.hierarchyId",
                 "[].entity.associationDetails.fleetCompany.companyId", "[].childEntities[].associationDetails.parentRoleId",
                 "[].entity.associationDetails.childCustomers[].profiles[].userId", "[].childFailureCount"):
        assert path not in missing


def test_associate_child_to_parent_sample_registers_the_parent(client):
    body = fixture("customers_bulk_post_child_to_parent.request.json")
    # The sample elides ("...") the element's own profiles and loyaltyInfo: these are the child's.
    body[0].update({"profiles": [{"firstName": "Child", "lastName": "Customer", "source": "WECHAT",
                                  "accountId": "WECHAT-CM",
                                  "identifiers": [{"type": "mobile", "value": "917875000001"}]}],
                    "loyaltyInfo": {"loyaltyType": "loyalty"}})
    response = client.post("/v2/customers/bulk?source=WECHAT&accountId=WECHAT-CM", body)
    assert response.status_code == 200, response.text
    result, = response.json()
    assert result["errors"] == []
    parent = client.details("mobile", "917875000000")
    assert parent["profiles"][0]["firstName"] == "慧慧"
    assert parent["associationDetails"]["roleCode"] == "FA"
    assert parent["associationDetails"]["fleetCompany"]["externalId"] == "ex91747000000"
    assert result["entity"]["associationDetails"]["parentCustomerId"] == parent["id"]


def test_update_association_sample_is_accepted(client):
    body = fixture("customers_bulk_put.request.json")
    tom = body[0]["profiles"][0]
    registered = client.bulk({"profiles": [dict(tom, firstName="Thomas")], "loyaltyInfo": {"loyaltyType": "loyalty"}})
    missing_source = client.put("/v2/customers/bulk", body)
    assert missing_source.status_code == 400

    answer = client.put_bulk(*body, source="WECHAT", account_id="WECHAT-CM")
    result, = answer
    assert result["errors"] == [] and result["entity"]["id"] == registered[0]["entity"]["id"]
    assert result["profiles"][0]["firstName"] == "Tom"
    association = result["associationDetails"]
    assert (association["roleCode"], association["fleetCompany"]["externalId"]) == ("FA", "ex917471000000")
    jim = client.details("mobile", "919905000000")
    assert association["parentCustomer"]["profiles"][0]["userId"] == jim["id"]
    assert jim["associationDetails"]["roleCode"] == "SFA"  # registered: the role whose children are FAs
    share, missing = coverage(fixture("customers_bulk_put.response.json"), answer)
    assert share >= MIN_PATH_COVERAGE, sorted(missing)


def test_lookup_answers_have_the_sample_responses_field_paths(client, child_with_parent):
    lookup = client.get("/v2/customers/lookup", params={"source": "WECHAT", "accountId": "WECHAT-CM",
                                                         "identifierName": "mobile", "identifierValue": "917979000000"})
    assert lookup.status_code == 200
    assert set(lookup.json()) == set(fixture("customers_lookup.response.json"))
    assert lookup.json()["entity"] == child_with_parent[0]["entity"]["id"]
    details = client.details("mobile", "917979000000")
    share, missing = coverage(fixture("customers_lookup_details.response.json"), details)
    # The sandbox keeps no loyalty ledger: loyaltyProgramDetails, groupLoyaltyProgramDetails, fraudDetails
    # and cardDetails (over half of the sample's paths) are not simulated; the customer's own fields are.
    assert share >= 0.4, sorted(missing)
    assert not {p for p in missing if p.startswith(("profiles[].attribution", "profiles[].commChannels",
                                                    "profiles[].identifiersAll", "associationDetails"))}
