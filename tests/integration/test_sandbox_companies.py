"""The sandbox's companies and fleet hierarchies against Capillary's reference (group-loyalty.md):
the reference's sample requests are accepted, answers carry the sample responses' fields, and
every documented code the sandbox answers (docs/sandbox.md, "Companies and hierarchies")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from associate.sandbox.launcher import SandboxProcess
from sandbox_support import HIERARCHY, SandboxClient, new_key

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


def sample(name: str):
    return json.loads((REFERENCE / name).read_text(encoding="utf-8"))


def field_paths(value, prefix: str = "") -> set[str]:
    """Every key path of a JSON value (``roles[].permissions[].permissionCode``)."""
    if isinstance(value, dict):
        paths = set()
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | field_paths(item, path)
        return paths
    if isinstance(value, list):
        return set().union(*(field_paths(item, prefix + "[]") for item in value)) if value else set()
    return set()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with SandboxProcess(tmp_path_factory.mktemp("companies") / "sandbox.db") as running:
        yield running


@pytest.fixture
def client(sandbox):
    return SandboxClient(sandbox.url)


def code_of(response) -> int:
    return response.json()["errors"][0]["code"]


def two_roles(**extra) -> list[dict]:
    return [{"code": "P", "childRoleCode": "K", **extra}, {"code": "K"}]


# --- reference samples ----------------------------------------------------------------


def test_reference_hierarchy_samples_are_accepted_and_answered_with_the_sample_fields(client):
    for name in ("fleet_hierarchy_post.request.json", "fleet_hierarchy_post_with_permissions.request.json"):
        created = client.post("/v2/fleetHierarchy", sample(name))
        assert created.status_code == 200, created.text
        assert field_paths(created.json()) == field_paths(sample("fleet_hierarchy_post.response.json"))
    hierarchy_id = created.json()["entity"]
    stored = client.get("/v2/fleetHierarchy", params={"id": hierarchy_id}).json()
    assert stored["code"] == "Partner1" and stored["active"] is True
    assert stored["roles"][0]["permissions"] == sample(name)["roles"][0]["permissions"]
    # createdBy is a Capillary user id: the sandbox has none to give (docs/sandbox.md).
    expected = {p for p in field_paths(sample("fleet_hierarchy_get.response.json")) if not p.endswith("createdBy")}
    assert expected <= field_paths(stored)
    assert client.get("/v2/fleetHierarchy", params={"code": "sunrise-h4"}).json()["roles"][2]["pointsAggregationRole"]
    listed = client.get("/v2/fleetHierarchy/all").json()["entity"]
    assert {"Partner1", "sunrise-h4"} <= {h["code"] for h in listed}


def test_reference_company_samples_are_accepted_and_answered_with_the_sample_fields(client):
    assert client.hierarchy("code-tst1111", two_roles()) > 0
    parent = client.post("/v2/companies", sample("companies_post_parent.request.json"))
    assert parent.status_code == 200, parent.text
    assert field_paths(sample("companies_post.response.json")) <= field_paths(parent.json())
    assert parent.json()["extendedFields"] == sample("companies_post_parent.request.json")["extendedFields"]
    got = client.get("/v2/companies", params={"externalId": "Purple2345"})
    assert field_paths(sample("companies_get.response.json")) <= field_paths(got.json())
    assert got.json()["isActive"] is True

    client.company("917904511111", hierarchy="code-tst1111")
    child = client.post("/v2/companies", sample("companies_post_child.request.json"))
    assert child.status_code == 200, child.text
    assert child.json()["parentCompany"]["externalId"] == "917904511111"

    # The Update sample's query names Purple2346 while its body's externalId is "Purple US":
    # the body's externalId is the company's new external id (docs/sandbox.md, assumption).
    client.company("Purple2346", hierarchy="code-tst1111")
    updated = client.put("/v2/companies?externalId=Purple2346", sample("companies_put.request.json"))
    assert updated.status_code == 200, updated.text
    assert field_paths(sample("companies_put.response.json")) <= field_paths(updated.json())
    assert (updated.json()["externalId"], updated.json()["name"]) == ("Purple US", "Purple2346")
    assert client.get("/v2/companies", params={"externalId": "Purple US"}).json()["companyId"] == \
        updated.json()["companyId"]


# --- companies ------------------------------------------------------------------------


def test_company_answers_and_lookups(client):
    holding, key = new_key("H"), new_key("C")
    created_holding = client.company(holding)
    created = client.company(key, extendedFields={"region": "north"}, parentCompany={"externalId": holding})
    assert created["parentCompany"] == {"externalId": holding, "companyId": created_holding["companyId"],
                                        "name": f"Company {holding}"}
    assert created["warnings"] == [] and created["isActive"] is True
    by_id = client.get("/v2/companies", params={"id": created["companyId"]}).json()
    assert by_id["externalId"] == key and by_id["extendedFields"] == {"region": "north"}
    updated = client.put(f"/v2/companies?id={created['companyId']}",
                         {"name": "New name", "extendedFields": {"region": "south"}})
    assert updated.status_code == 200
    stored = client.get("/v2/companies", params={"externalId": key}).json()
    assert (stored["name"], stored["extendedFields"]) == ("New name", {"region": "south"})


def test_unknown_hierarchy_is_1701(client):
    response = client.post("/v2/companies", {"name": "x", "externalId": new_key("C"), "hierarchyDefinitionCode": "nope"})
    assert response.status_code == 400 and code_of(response) == 1701


def test_existing_external_id_is_1702_on_create_and_on_rename(client):
    key, other = new_key("C"), new_key("C")
    client.company(key)
    client.company(other)
    duplicate = client.post("/v2/companies", {"name": "x", "externalId": key, "hierarchyDefinitionCode": HIERARCHY})
    assert duplicate.status_code == 400 and code_of(duplicate) == 1702
    renamed = client.put(f"/v2/companies?externalId={other}", {"externalId": key})
    assert renamed.status_code == 400 and code_of(renamed) == 1702


def test_unknown_parent_company_is_1703(client):
    body = {"name": "x", "externalId": new_key("C"), "hierarchyDefinitionCode": HIERARCHY}
    orphan = client.post("/v2/companies", dict(body, parentCompany={"externalId": "nope"}))
    assert orphan.status_code == 400 and code_of(orphan) == 1703
    assert client.get("/v2/companies", params={"externalId": body["externalId"]}).status_code == 404
    client.company(body["externalId"])
    moved = client.put(f"/v2/companies?externalId={body['externalId']}", {"parentCompany": {"externalId": "nope"}})
    assert moved.status_code == 400 and code_of(moved) == 1703


def test_unknown_company_is_1704_on_get_put_and_delete(client):
    for params in ({"externalId": "nope"}, {"id": 999999999}):
        assert code_of(client.get("/v2/companies", params=params)) == 1704
    missing = client.get("/v2/companies", params={"externalId": "nope"})
    assert missing.status_code == 404 and missing.json()["errors"][0]["status"] is False
    assert client.put("/v2/companies?externalId=nope", {"name": "x"}).status_code == 404
    deleted = client.session.delete(client.url + "/v2/companies", params={"externalId": "nope"}, timeout=30)
    assert deleted.status_code == 404 and code_of(deleted) == 1704


def test_delete_makes_the_company_and_its_sub_companies_inactive_1705_1706(client):
    holding, sub, other = new_key("H"), new_key("S"), new_key("O")
    client.company(holding)
    client.company(sub, parentCompany={"externalId": holding})
    client.company(other)
    deleted = client.session.delete(client.url + "/v2/companies", params={"externalId": holding}, timeout=30)
    assert deleted.status_code == 200 and deleted.json()["isActive"] is False
    for key in (holding, sub):
        got = client.get("/v2/companies", params={"externalId": key})
        assert got.status_code == 200 and got.json()["isActive"] is False
    assert client.get("/v2/companies", params={"externalId": other}).json()["isActive"] is True

    under_inactive = client.post("/v2/companies", {"name": "x", "externalId": new_key("C"),
                                                   "hierarchyDefinitionCode": HIERARCHY,
                                                   "parentCompany": {"externalId": holding}})
    assert under_inactive.status_code == 400 and code_of(under_inactive) == 1705
    update = client.put(f"/v2/companies?externalId={sub}", {"name": "x"})
    assert update.status_code == 400 and code_of(update) == 1705
    reactivate = client.put(f"/v2/companies?externalId={sub}", {"isActive": True})
    assert reactivate.status_code == 400 and code_of(reactivate) == 1706
    moved = client.put(f"/v2/companies?externalId={other}", {"parentCompany": {"externalId": sub}})
    assert moved.status_code == 400 and code_of(moved) == 1705
    taken = client.post("/v2/companies", {"name": "x", "externalId": holding, "hierarchyDefinitionCode": HIERARCHY})
    assert code_of(taken) == 1702  # an inactive company still holds its external id


@pytest.mark.parametrize("body", [
    {"name": "x", "hierarchyDefinitionCode": HIERARCHY},
    {"name": "x", "externalId": None, "hierarchyDefinitionCode": HIERARCHY},
    {"name": "x", "externalId": " ", "hierarchyDefinitionCode": HIERARCHY},
    {"name": "x", "externalId": "fine", "hierarchyDefinitionCode": HIERARCHY, "parentCompany": {"externalId": ""}},
    {"name": "x", "externalId": "fine", "hierarchyDefinitionCode": HIERARCHY, "parentCompany": {}},
])
def test_null_or_empty_external_id_is_1707(client, body):
    response = client.post("/v2/companies", body)
    assert response.status_code == 400 and code_of(response) == 1707


def test_empty_external_id_on_update_is_1707(client):
    key = new_key("C")
    client.company(key)
    response = client.put(f"/v2/companies?externalId={key}", {"externalId": ""})
    assert response.status_code == 400 and code_of(response) == 1707


def test_no_company_key_is_1708(client):
    for call in (lambda: client.get("/v2/companies"), lambda: client.put("/v2/companies", {"name": "x"}),
                 lambda: client.session.delete(client.url + "/v2/companies", timeout=30)):
        response = call()
        assert response.status_code == 400 and code_of(response) == 1708


def test_own_parent_is_1709(client):
    key = new_key("C")
    body = {"name": "x", "externalId": key, "hierarchyDefinitionCode": HIERARCHY, "parentCompany": {"externalId": key}}
    created = client.post("/v2/companies", body)
    assert created.status_code == 400 and code_of(created) == 1709
    client.company(key)
    updated = client.put(f"/v2/companies?externalId={key}", {"parentCompany": {"externalId": key}})
    assert updated.status_code == 400 and code_of(updated) == 1709


def test_cyclic_parenting_is_1710(client):
    top, middle, bottom = new_key("T"), new_key("M"), new_key("B")
    client.company(top)
    client.company(middle, parentCompany={"externalId": top})
    client.company(bottom, parentCompany={"externalId": middle})
    response = client.put(f"/v2/companies?externalId={top}", {"parentCompany": {"externalId": bottom}})
    assert response.status_code == 400 and code_of(response) == 1710
    assert client.get("/v2/companies", params={"externalId": top}).json()["parentCompany"] is None


def test_hierarchy_update_is_1711(client):
    key = new_key("C")
    client.company(key)
    same = client.put(f"/v2/companies?externalId={key}", {"hierarchyDefinitionCode": HIERARCHY})
    assert same.status_code == 200
    moved = client.put(f"/v2/companies?externalId={key}", {"hierarchyDefinitionCode": "other"})
    assert moved.status_code == 400 and code_of(moved) == 1711


# --- hierarchies ----------------------------------------------------------------------


def test_hierarchy_name_is_optional_and_get_by_code(client):
    code = new_key("h")
    new_id = client.post("/v2/fleetHierarchy", {"code": code, "roles": two_roles()}).json()["entity"]
    stored = client.get("/v2/fleetHierarchy", params={"code": code}).json()
    assert stored["id"] == new_id and stored["name"] == code
    assert all(role["hierarchyId"] == new_id for role in stored["roles"])


@pytest.mark.parametrize("body, code", [
    ({"roles": two_roles()}, 1613),
    ({"code": " ", "roles": two_roles()}, 1613),
    ({"code": "{new}", "roles": [{"code": "P", "childRoleCode": "K"}, {"code": ""}]}, 1603),
    ({"code": "{new}", "roles": [{"childRoleCode": "K"}, {"code": "K"}]}, 1603),
    ({"code": "{new}", "roles": [{"code": "P"}, {"code": "P"}]}, 1606),
    ({"code": "{new}", "roles": [{"code": "P", "childRoleCode": "Z"}, {"code": "K"}]}, 1607),
    ({"code": "{new}", "roles": [{"code": "P", "childRoleCode": "K"}, {"code": "K", "childRoleCode": "P"}]}, 1608),
    ({"code": "{new}", "roles": [{"code": "P", "childRoleCode": "P"}, {"code": "K"}]}, 1608),
    ({"code": "{new}", "roles": [{"code": "P"}]}, 1601),
    ({"code": "{new}"}, 1601),
    ({"code": "{new}", "roles": [{"code": f"R{i}"} for i in range(9)]}, 1602),
    ({"code": "{new}", "roles": two_roles(maxChild=-1)}, 1604),
    ({"code": "{new}", "roles": two_roles(maxChild=30001)}, 1605),
    ({"code": "{new}", "roles": two_roles(permissions=[{"permissionCode": "fly", "permissionValue": True}])}, 1641),
    ({"code": "{new}", "roles": [{"code": "P", "childRoleCode": "K", "pointsAggregationRole": True},
                                 {"code": "K", "pointsAggregationRole": True}]}, 1649),
    ({"code": "{new}", "roles": two_roles(), "autoGroupCreationEnabled": True}, 1614),
    ({"code": "{new}", "roles": "P"}, 400),
])
def test_hierarchy_rules(client, body, code):
    if body.get("code") == "{new}":
        body = dict(body, code=new_key("h"))
    response = client.post("/v2/fleetHierarchy", body)
    assert response.status_code == 400 and code_of(response) == code, response.text
    if body.get("code", "").strip():
        assert client.get("/v2/fleetHierarchy", params={"code": body["code"]}).status_code == 404


def test_existing_hierarchy_code_is_1600(client):
    code = new_key("h")
    client.hierarchy(code, two_roles())
    again = client.post("/v2/fleetHierarchy", {"code": code, "roles": two_roles()})
    assert again.status_code == 400 and code_of(again) == 1600


def test_unknown_hierarchy_id_or_code_is_1609(client):
    for params in ({"id": 999999}, {"code": "nope"}, {"id": 0}):
        response = client.get("/v2/fleetHierarchy", params=params)
        assert response.status_code == 404 and code_of(response) == 1609
    assert code_of(client.get("/v2/fleetHierarchy")) == 400
