"""The sandbox's contract, over HTTP: auth, bulk registration/matching, association rules, lookups,
companies and hierarchies (one sandbox process for the module)."""

from __future__ import annotations

import pytest

from associate.models import BulkResultElement, Codes
from associate.sandbox.launcher import SandboxProcess
from sandbox_support import (HIERARCHY, OAUTH, SandboxClient, basic_header, element, error_codes, new_key,
                             new_mobile, profile)




@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    db = tmp_path_factory.mktemp("sandbox") / "sandbox.db"
    with SandboxProcess(db, credentials=(("store.server", "server123"), ("other.till", "pw2"))) as running:
        yield running


@pytest.fixture
def client(sandbox):
    return SandboxClient(sandbox.url)


@pytest.fixture(scope="module")
def company(sandbox):
    key = new_key("C")
    SandboxClient(sandbox.url).company(key)
    return key


# --- auth ---------------------------------------------------------------------------------


def test_basic_auth_needs_the_md5_of_the_password(sandbox):
    good = SandboxClient(sandbox.url, basic_header())
    assert good.get("/v2/fleetHierarchy/all").status_code == 200
    import base64
    plain = {"Authorization": "Basic " + base64.b64encode(b"store.server:server123").decode()}
    for headers in (plain, basic_header(password="wrong"), basic_header(user="nobody"), {}):
        response = SandboxClient(sandbox.url, headers).get("/v2/fleetHierarchy/all")
        assert response.status_code == 401
        assert response.json()["errors"][0]["code"] == 401


def test_oauth_token_grants_access_and_wrong_secret_is_401(sandbox):
    anonymous = SandboxClient(sandbox.url, {})
    response = anonymous.post("/v3/oauth/token/generate", {"key": OAUTH[0], "secret": OAUTH[1]})
    assert response.status_code == 200
    body = response.json()
    assert body["errors"] is None and body["data"]["ttlSeconds"] == 300
    token_client = SandboxClient(sandbox.url, {"X-CAP-API-OAUTH-TOKEN": body["data"]["accessToken"]})
    assert token_client.get("/v2/fleetHierarchy/all").status_code == 200

    wrong = anonymous.post("/v3/oauth/token/generate", {"key": OAUTH[0], "secret": "nope"})
    assert wrong.status_code == 401 and wrong.json()["data"] is None
    forged = SandboxClient(sandbox.url, {"X-CAP-API-OAUTH-TOKEN": body["data"]["accessToken"][:-3] + "abc"})
    assert forged.get("/v2/fleetHierarchy/all").status_code == 401
    assert anonymous.post("/v3/oauth/token/generate", {"key": OAUTH[0]}).status_code == 400


# --- bulk: registration, matching, validation -----------------------------------------------


def test_registration_keeps_details_and_the_update_call_changes_them(sandbox, client):
    mobile = new_mobile()
    first = client.bulk(element(mobile, email=f"{new_key('e')}@example.com"))[0]
    BulkResultElement.model_validate(first)
    customer_id = first["entity"]["id"]
    customers_before = sandbox.stats()["customers"]

    again = element(mobile, firstName="Renamed")
    again["extendedFields"] = {"gender": "F"}
    second = client.bulk(again)[0]
    # POST of a registered customer: no error, no duplicate, the stored customer as it was.
    assert second["errors"] == [] and second["entity"]["id"] == customer_id
    assert second["entity"]["profiles"][0]["firstName"] == "Test"
    assert second["entity"]["associationDetails"] is None
    assert sandbox.stats()["customers"] == customers_before

    updated = client.put_bulk(again)[0]
    assert updated["errors"] == [] and updated["entity"]["id"] == customer_id
    assert updated["profiles"][0]["firstName"] == "Renamed"  # the reference's PUT form: fields at the top
    details = client.details("mobile", "+" + mobile)
    assert details["id"] == customer_id
    assert details["profiles"][0]["firstName"] == "Renamed"
    assert details["extendedFields"] == {"gender": "F"}
    assert sandbox.stats()["customers"] == customers_before


def test_update_call_needs_source_and_a_registered_customer(client):
    response = client.put("/v2/customers/bulk", [element()])
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == Codes.INVALID_INPUT
    unknown = new_mobile()
    result = client.put_bulk(element(unknown), element(), source="WECHAT", account_id="WECHAT-CM",
                             expect=(200, 500))
    assert [error_codes(r) for r in result] == [[Codes.CUSTOMER_NOT_FOUND]] * 2
    assert client.lookup("mobile", unknown) is None
    # The query's source names the profile when the profile does not.
    body = element()
    del body["profiles"][0]["source"]
    entity = client.bulk(body)[0]["entity"]
    assert entity["profiles"][0]["source"] == "INSTORE"
    del body["profiles"][0]["identifiers"][0]
    body["profiles"][0]["identifiers"].append({"type": "mobile", "value": new_mobile()})
    response = client.post("/v2/customers/bulk?source=WECHAT&accountId=WECHAT-CM", [body])
    assert response.status_code == 200, response.text
    assert {k: response.json()[0]["entity"]["profiles"][0][k] for k in ("source", "accountId")} == {
        "source": "WECHAT", "accountId": "WECHAT-CM"}
    parent = new_mobile()  # parent and child profiles too
    client.bulk(element(role="FC", parent=parent))
    assert client.details("mobile", parent)["profiles"][0]["source"] == "INSTORE"


def test_identifier_of_another_customer_is_a_conflict_and_changes_nothing(client):
    mobile_a, external_a = new_mobile(), new_key("ext")
    mobile_b, email_b = new_mobile(), f"{new_key('b')}@example.com"
    a = client.bulk(element(mobile_a, external_id=external_a))[0]["entity"]["id"]
    b = client.bulk(element(mobile_b, email=email_b))[0]["entity"]["id"]

    results = client.bulk(
        element(mobile_a, email=email_b.upper(), firstName="Changed"),   # email of B (case-insensitive)
        element(mobile_b, external_id=external_a),                       # externalId of A
        {"profiles": [{"identifiers": [{"type": "mobile", "value": mobile_a},
                                       {"type": "mobile", "value": mobile_b}]}],
         "loyaltyInfo": {"loyaltyType": "loyalty"}},                     # two customers' mobiles
        expect=200,                                  # every element failed: 200 in the documented form
    )
    assert [error_codes(r) for r in results] == [[Codes.EMAIL_USED], [Codes.EXTERNAL_ID_USED], [Codes.MOBILE_USED]]
    assert all(r["entity"] is None for r in results)
    assert client.details("mobile", mobile_a)["profiles"][0]["firstName"] == "Test"
    assert client.lookup("externalId", external_a) == a and client.lookup("email", email_b) == b


@pytest.mark.parametrize("body, code", [
    (element("12345"), Codes.INVALID_MOBILE),
    (element(email="not-an-email"), Codes.INVALID_EMAIL),
    (element(external_id="bad\x01id"), Codes.INVALID_EXTERNAL_ID),
    ({"profiles": [{"identifiers": [{"type": "wechat", "value": "wx-1"}]}],
      "loyaltyInfo": {"loyaltyType": "loyalty"}}, Codes.NO_PRIMARY_IDENTIFIER),
    (element("12345", loyalty="non_loyalty"), Codes.NO_IDENTIFIER_NON_LOYALTY),
    (element(createDate="1985-05-01T10:00:00+05:30"), Codes.REGISTRATION_DATE_OUT_OF_RANGE),
    (element(createDate="2999-01-01T00:00:00+00:00"), Codes.REGISTRATION_DATE_OUT_OF_RANGE),
], ids=["mobile", "email", "externalId", "no-primary", "non-loyalty", "before-1990", "future"])
def test_invalid_identifiers_and_dates_fail_the_element(client, body, code):
    result = client.one(body)
    assert error_codes(result) == [code]
    assert result["entity"] is None


def test_invalid_mobile_with_another_primary_is_only_a_warning(client):
    email = f"{new_key('w')}@example.com"
    result = client.bulk(element("12ab", email=email))[0]
    assert [w["code"] for w in result["entity"]["warnings"]] == [Codes.INVALID_MOBILE_WARNING]
    assert client.lookup("email", email) == result["entity"]["id"]
    assert client.lookup("mobile", "12ab") is None
    wechat_only = {"profiles": [{"identifiers": [{"type": "wechat", "value": new_key("wx")}]}],
                   "loyaltyInfo": {"loyaltyType": "non_loyalty"}}
    assert client.bulk(wechat_only)[0]["entity"]["loyaltyInfo"] == {"loyaltyType": "non_loyalty"}


def test_unstorable_extended_fields_are_a_warning_and_skipped(client):
    body = element()
    body["extendedFields"] = {"gender": "M", "notes": "x" * 300, "nested": {"a": 1}}
    entity = client.bulk(body)[0]["entity"]
    assert [w["code"] for w in entity["warnings"]] == [Codes.EXTENDED_FIELDS_FAILED] * 2
    assert entity["extendedFields"] == {"gender": "M"}


def test_malformed_requests_are_400_for_the_whole_batch(sandbox, client):
    good_mobile = new_mobile()
    bad_type = element()
    bad_type["loyaltyInfo"] = "x"
    cases = [
        (client.post("/v2/customers/bulk", data=b"[{not json"), "Malformed JSON"),
        (client.post("/v2/customers/bulk", {"profiles": []}), "JSON array"),
        (client.post("/v2/customers/bulk", []), "empty"),
        (client.post("/v2/customers/bulk", [element(good_mobile), bad_type]), "element[1].loyaltyInfo"),
        (client.post("/v2/customers/bulk", [{"profiles": [profile()]}]), "element[0].loyaltyInfo: Field required"),
        (client.post("/v2/customers/bulk", [element(), 7]), "element[1]: must be a JSON object"),
        (client.post("/v2/customers/bulk", data=b'[{"profiles":[{"firstName":"\\ud800","identifiers":[{"type":'
                     b'"mobile","value":"919812345678"}]}],"loyaltyInfo":{"loyaltyType":"loyalty"}}]'), "surrogate"),
    ]
    for response, text in cases:
        assert response.status_code == 400, response.text
        error = response.json()["errors"][0]
        assert error["code"] == Codes.INVALID_INPUT and error["status"] is False
        assert text in error["message"]
    assert client.lookup("mobile", good_mobile) is None  # nothing of a rejected batch is stored


def test_more_elements_than_the_batch_limit_is_1060(client):
    response = client.post("/v2/customers/bulk", [element() for _ in range(101)])
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == Codes.BATCH_LIMIT_EXCEEDED
    assert len(client.bulk(*[element() for _ in range(100)])) == 100


def test_every_element_failed_is_200_with_per_element_results(client):
    response = client.post("/v2/customers/bulk", [element("1"), element(email="x")])
    assert response.status_code == 200
    assert [error_codes(r) for r in response.json()] == [[Codes.INVALID_MOBILE], [Codes.INVALID_EMAIL]]


def test_results_come_back_in_request_order_with_profiles_and_cards(client):
    mobiles = [new_mobile() for _ in range(5)]
    card = new_key("card")
    elements = [element(m) for m in mobiles]
    elements[2]["profiles"][0]["identifiers"].append(
        {"type": "cardnumber", "value": card, "seriesCode": "GOLD", "statusLabel": "ACTIVE"})
    results = client.bulk(*elements)
    ids = [r["entity"]["id"] for r in results]
    assert [client.lookup("mobile", m) for m in mobiles] == ids
    assert client.lookup("cardnumber", card) == ids[2]
    stored_card = [i for i in client.details("cardnumber", card)["profiles"][0]["identifiers"]
                   if i["type"] == "cardnumber"]
    assert stored_card == [{"type": "cardnumber", "value": card, "seriesCode": "GOLD", "statusLabel": "ACTIVE"}]


# --- association ----------------------------------------------------------------------------


def build_chain(client, company):
    """GFA -> SFA -> FA -> FC, each sent with its parent; the four mobiles."""
    gfa, sfa, fa, fc = (new_mobile() for _ in range(4))
    client.bulk(element(gfa, role="GFA", company=company))
    client.bulk(element(sfa, role="SFA", company=company, parent=gfa))
    client.bulk(element(fa, role="FA", company=company, parent=sfa))
    client.bulk(element(fc, role="FC", company=company, parent=fa))
    return gfa, sfa, fa, fc


def test_full_chain_is_stored_with_company_role_and_parent(client, company):
    mobiles = build_chain(client, company)
    ids = [client.lookup("mobile", m) for m in mobiles]
    for i, (mobile, role) in enumerate(zip(mobiles, ["GFA", "SFA", "FA", "FC"])):
        details = client.details("mobile", mobile)["associationDetails"]
        assert details["hierarchyCode"] == HIERARCHY and details["roleCode"] == role
        assert details["fleetCompany"]["externalId"] == company
        assert details["parentCustomerId"] == (ids[i - 1] if i else None)
    result = client.bulk(element(mobiles[3], role="FC", company=company, parent=mobiles[2]))[0]
    association = result["entity"]["associationDetails"]
    assert result["entity"]["id"] == ids[3] and association["new"] is False
    assert association["childCustomer"] is False and association["skipLevelAllowed"] is False
    assert association["fleetCompany"]["companyId"] > 0 and association["parentRoleId"] > 0


def test_association_rules_give_their_codes(client, company):
    gfa, sfa, fa, fc = build_chain(client, company)
    other_hierarchy = new_key("h")
    client.hierarchy(other_hierarchy, [{"code": "BOSS", "childRoleCode": "WORKER"}, {"code": "WORKER"}])
    foreign_company = new_key("C")
    client.company(foreign_company, hierarchy=other_hierarchy)
    unknown_parent = new_mobile()
    cases = [
        (element(role="FA", hierarchy="no-such-hierarchy"), 1616),
        (element(role="BOSS", company=company), 1615),
        (element(role="FA", company="no-such-company"), 1704),
        (element(role="FC", company=company, parent=gfa), 1617),
        (element(role="FA", company=foreign_company), 1616),
        (element(role="GFA", company=company, parent=unknown_parent), 1625),  # GFA is no role's child
        (element(fa, role="FA", company=company, parent=fa), 1608),
        (element(sfa, role="SFA", company=company, parent=fc), 1608),
    ]
    for body, code in cases:
        assert error_codes(client.one(body)) == [code], body
    assert client.lookup("mobile", unknown_parent) is None  # a failed element registers nobody
    assert client.details("mobile", fa)["associationDetails"]["parentCustomerId"] == client.lookup("mobile", sfa)


@pytest.mark.parametrize("update", [False, True], ids=["POST", "PUT"])
def test_hierarchy_role_and_company_cannot_move(client, company, update):
    other_hierarchy, other_company, same_hierarchy_company = new_key("h"), new_key("C"), new_key("C")
    client.hierarchy(other_hierarchy, [{"code": "BOSS", "childRoleCode": "FA"}, {"code": "FA"}])
    client.company(other_company, hierarchy=other_hierarchy)
    client.company(same_hierarchy_company)
    gfa, sfa, fa, fc = build_chain(client, company)
    send = client.put_bulk if update else client.bulk
    cases = [
        (element(fa, role="FA", hierarchy=other_hierarchy, company=other_company), 1626),
        (element(fa, role="SFA", company=company), 1627),
        (element(fa, role="FA", company=same_hierarchy_company), 1628),
    ]
    for body, code in cases:
        assert [error_codes(r) for r in send(body, expect=(200, 500))] == [[code]], body
    stored = client.details("mobile", fa)["associationDetails"]
    assert (stored["roleCode"], stored["fleetCompany"]["externalId"]) == ("FA", company)
    # A child named by childCustomers cannot move either: it fails alone.
    result = send(element(sfa, role="SFA", company=company, children=(fc,)))[0]
    assert result["errors"] == [] and error_codes(result["childEntities"][0]) == [1627]
    # The parent may change within the rules, and the same association again is no change.
    other_sfa = new_mobile()
    client.bulk(element(other_sfa, role="SFA", company=company, parent=gfa))
    moved = send(element(fa, role="FA", company=company, parent=other_sfa))[0]
    assert moved["errors"] == []
    assert moved["entity"]["associationDetails"]["parentCustomerId"] == client.lookup("mobile", other_sfa)
    assert send(element(fa, role="FA"))[0]["errors"] == []
    assert client.details("mobile", fa)["associationDetails"]["fleetCompany"]["externalId"] == company


def test_inactive_company_refuses_new_associations_1705(client):
    key = new_key("C")
    client.company(key)
    member = new_mobile()
    client.bulk(element(member, role="FA", company=key))
    assert client.session.delete(client.url + "/v2/companies", params={"externalId": key}, timeout=30).ok
    assert error_codes(client.one(element(role="FA", company=key))) == [1705]
    assert error_codes(client.put_bulk(element(member, role="FA", company=key), expect=(200, 500))[0]) == [1705]


def test_unregistered_parent_and_children_are_registered(client, company):
    child, parent = new_mobile(), new_mobile()
    result = client.bulk(element(child, role="FC", company=company, parent=parent))[0]
    assert result["errors"] == []
    stored_parent = client.details("mobile", parent)
    # The parent takes the role whose children are FCs, and the child's company.
    assert stored_parent["associationDetails"]["roleCode"] == "FA"
    assert stored_parent["associationDetails"]["fleetCompany"]["externalId"] == company
    assert result["entity"]["associationDetails"]["parentCustomerId"] == stored_parent["id"]
    assert result["entity"]["associationDetails"]["parentRoleId"] == stored_parent["associationDetails"]["roleId"]
    # An existing parent mapped in another hierarchy is not taken over.
    elsewhere = new_key("h")
    client.hierarchy(elsewhere, [{"code": "BOSS", "childRoleCode": "WORKER"}, {"code": "WORKER"}])
    boss = new_mobile()
    client.bulk(element(boss, role="BOSS", hierarchy=elsewhere))
    assert error_codes(client.one(element(role="FC", company=company, parent=boss))) == [1625]


def test_max_child_and_skip_levels(client):
    code = new_key("tight")
    client.hierarchy(code, [{"code": "A", "childRoleCode": "B", "maxChild": 2}, {"code": "B", "childRoleCode": "C"},
                            {"code": "C"}])
    boss, kid1, kid2, kid3 = (new_mobile() for _ in range(4))
    client.bulk(element(boss, role="A", hierarchy=code))
    client.bulk(element(kid1, role="B", hierarchy=code, parent=boss), element(kid2, role="B", hierarchy=code, parent=boss))
    assert error_codes(client.one(element(kid3, role="B", hierarchy=code, parent=boss))) == [1618]
    # A re-send of an existing child does not count against the limit.
    assert client.bulk(element(kid2, role="B", hierarchy=code, parent=boss))[0]["errors"] == []
    assert error_codes(client.one(element(role="C", hierarchy=code, parent=boss))) == [1617]

    skipping = new_key("skip")
    client.hierarchy(skipping, [{"code": "A", "childRoleCode": "B"}, {"code": "B", "childRoleCode": "C"},
                                {"code": "C"}], skipRoleAllowed=True)
    top, grandchild = new_mobile(), new_mobile()
    client.bulk(element(top, role="A", hierarchy=skipping))
    result = client.bulk(element(grandchild, role="C", hierarchy=skipping, parent=top))[0]
    assert result["entity"]["associationDetails"]["skipLevelAllowed"] is True
    assert result["entity"]["associationDetails"]["parentCustomerId"] == client.lookup("mobile", top)


def test_child_customers_are_registered_and_fail_one_by_one(sandbox, client, company):
    fa, kid1, kid2 = new_mobile(), new_mobile(), new_mobile()
    result = client.bulk(element(fa, role="FA", company=company, children=(kid1, "123", kid2)))[0]
    BulkResultElement.model_validate(result)
    assert (result["childCount"], result["childSuccessCount"], result["childFailureCount"]) == (3, 2, 1)
    first, bad, last = result["childEntities"]
    assert error_codes(bad) == [Codes.INVALID_MOBILE] and bad["id"] is None
    fa_id = result["entity"]["id"]
    assert [c["profiles"][0]["userId"] for c in result["entity"]["associationDetails"]["childCustomers"]] == [
        first["id"], last["id"]]
    for child, mobile in ((first, kid1), (last, kid2)):
        assert child["associationDetails"]["childCustomer"] is True and child["associationDetails"]["new"] is True
        details = client.details("mobile", mobile)["associationDetails"]
        assert (details["roleCode"], details["parentCustomerId"]) == ("FC", fa_id)
        assert details["fleetCompany"]["externalId"] == company
    customers = sandbox.stats()["customers"]
    again = client.bulk(element(fa, role="FA", company=company, children=(kid1, kid2)))[0]
    assert [c["id"] for c in again["childEntities"]] == [first["id"], last["id"]]
    assert sandbox.stats()["customers"] == customers

    wrong_role = client.bulk(element(role="FA", company=company, children=(new_mobile(),), child_role="SFA"))[0]
    assert wrong_role["entity"]["id"] and error_codes(wrong_role["childEntities"][0]) == [1617]
    assert wrong_role["childFailureCount"] == 1


def test_cards_need_series_and_status_and_last_viewed_date_is_a_mobile_push_field(client):
    card = {"type": "cardnumber", "value": new_key("card"), "seriesCode": "GOLD", "statusLabel": "ACTIVE"}
    for missing in ("seriesCode", "statusLabel"):
        body = element()
        body["profiles"][0]["identifiers"].append({k: v for k, v in card.items() if k != missing})
        assert error_codes(client.one(body)) == [Codes.INVALID_INPUT]
    body = element()
    body["profiles"][0]["identifiers"].append(dict(card, seriesCode=None, seriesId=19))
    body["profiles"][0]["commChannels"] = [{"type": "mobilePush", "value": "fcm-token", "primary": True,
                                            "verified": True, "meta": {"lastViewedDate": "2019-10-25"}}]
    entity = client.bulk(body)[0]["entity"]
    channel = entity["profiles"][0]["commChannels"][0]
    assert channel["meta"] == {"residence": False, "office": False, "lastViewedDate": "2019-10-25"}
    on_profile = element(lastViewedDate="2019-10-25")
    on_email = element()
    on_email["profiles"][0]["commChannels"] = [{"type": "email", "value": "a@example.com",
                                                "meta": {"lastViewedDate": "2019-10-25"}}]
    unlisted = dict(element(), customerType="FLEET")  # a field the reference does not list
    for body in (on_profile, on_email, unlisted):
        response = client.post("/v2/customers/bulk", [body])
        assert response.status_code == 400 and response.json()["errors"][0]["code"] == Codes.INVALID_INPUT


# --- lookups, companies, hierarchies ---------------------------------------------------------


def test_lookup_errors(client):
    missing = client.get("/v2/customers/lookup", params={"source": "INSTORE", "identifierName": "mobile"})
    assert missing.status_code == 400
    unknown = client.get("/v2/customers/lookup",
                         params={"source": "INSTORE", "identifierName": "shoeSize", "identifierValue": "42"})
    assert unknown.status_code == 400
    details = client.get("/v2/customers/lookup/customerDetails",
                         params={"source": "ALL", "identifierName": "email", "identifierValue": "nobody@example.com"})
    assert details.status_code == 404 and details.json()["errors"][0]["code"] == Codes.CUSTOMER_NOT_FOUND


def test_companies_create_get_update(client):
    """Codes and answers in detail: test_sandbox_companies.py."""
    holding, key = new_key("H"), new_key("C")
    created_holding = client.company(holding)
    created = client.company(key, extendedFields={"region": "north"}, parentCompany={"externalId": holding})
    assert created["parentCompany"] == {"externalId": holding, "companyId": created_holding["companyId"],
                                        "name": f"Company {holding}"}
    by_id = client.get("/v2/companies", params={"id": created["companyId"]}).json()
    assert by_id["externalId"] == key and by_id["isActive"] is True

    duplicate = client.post("/v2/companies", {"name": "x", "externalId": key, "hierarchyDefinitionCode": HIERARCHY})
    assert duplicate.status_code == 400 and duplicate.json()["errors"][0]["code"] == 1702
    orphan = client.post("/v2/companies", {"name": "x", "externalId": new_key("C"), "hierarchyDefinitionCode": HIERARCHY,
                                           "parentCompany": {"externalId": "nope"}})
    assert orphan.status_code == 400 and orphan.json()["errors"][0]["code"] == 1703
    no_hierarchy = client.post("/v2/companies", {"name": "x", "externalId": new_key("C"),
                                                 "hierarchyDefinitionCode": "nope"})
    assert no_hierarchy.status_code == 400 and no_hierarchy.json()["errors"][0]["code"] == 1701

    updated = client.put(f"/v2/companies?externalId={key}", {"name": "New name", "extendedFields": {"region": "south"}})
    assert updated.status_code == 200
    stored = client.get("/v2/companies", params={"externalId": key}).json()
    assert (stored["name"], stored["extendedFields"]) == ("New name", {"region": "south"})
    moved = client.put(f"/v2/companies?externalId={key}", {"hierarchyDefinitionCode": "other"})
    assert moved.status_code == 400 and moved.json()["errors"][0]["code"] == 1711
    assert client.get("/v2/companies", params={"externalId": "nope"}).json()["errors"][0]["code"] == 1704
    assert client.put("/v2/companies?externalId=nope", {"name": "x"}).json()["errors"][0]["code"] == 1704


def test_hierarchy_definitions(client):
    listed = client.get("/v2/fleetHierarchy/all").json()["entity"]
    seed = next(h for h in listed if h["code"] == HIERARCHY)
    chain = {r["code"]: r.get("childRoleCode") for r in seed["roles"]}
    assert chain == {"GFA": "SFA", "SFA": "FA", "FA": "FC", "FC": None}
    assert all(r["maxChild"] == 5000 for r in seed["roles"]) and seed["skipRoleAllowed"] is False
    assert client.get("/v2/fleetHierarchy", params={"id": seed["id"]}).json()["code"] == HIERARCHY
    assert client.get("/v2/fleetHierarchy", params={"id": 999999}).status_code == 404

    code = new_key("def")
    new_id = client.hierarchy(code, [{"code": "P", "childRoleCode": "K"}, {"code": "K"}])
    assert client.get("/v2/fleetHierarchy", params={"id": new_id}).json()["code"] == code
    again = client.post("/v2/fleetHierarchy", {"code": code, "name": "x", "roles": [{"code": "P"}]})
    assert again.status_code == 400 and again.json()["errors"][0]["code"] == 1600
    broken = client.post("/v2/fleetHierarchy", {"code": new_key("def"), "name": "x",
                                                "roles": [{"code": "P", "childRoleCode": "Z"}]})
    assert broken.status_code == 400 and broken.json()["errors"][0]["code"] == 1607


def test_stats_count_requests_and_stored_things(sandbox, client):
    before = sandbox.stats()
    client.bulk(element(role="FA", company=None))
    status = str(client.get("/v2/companies", params={"externalId": "nope"}).status_code)
    after = sandbox.stats()
    assert after["customers"] == before["customers"] + 1
    assert after["associations"] == before["associations"] + 1
    bulk_key = "POST /v2/customers/bulk"
    assert after["requests"][bulk_key]["200"] == before["requests"][bulk_key]["200"] + 1
    assert after["requests"]["GET /v2/companies"][status] == (
        before["requests"].get("GET /v2/companies", {}).get(status, 0) + 1)
    assert after["elements"]["received"] == before["elements"]["received"] + 1


def test_access_log_has_no_secrets_and_masks_mobiles(sandbox, client):
    mobile = new_mobile()
    client.bulk(element(mobile))
    client.lookup("mobile", mobile)
    token = SandboxClient(sandbox.url, {}).post("/v3/oauth/token/generate",
                                                {"key": OAUTH[0], "secret": OAUTH[1]}).json()["data"]["accessToken"]
    log = open(sandbox.log_path, encoding="utf-8").read()
    assert "GET /v2/customers/lookup?" in log
    for secret in (mobile, "server123", basic_header()["Authorization"].split()[1], OAUTH[1], token):
        assert secret not in log


def test_concurrent_sends_of_the_same_customers_create_each_once(sandbox):
    from concurrent.futures import ThreadPoolExecutor
    batch = [element() for _ in range(20)]
    before = sandbox.stats()["customers"]

    def send(_):
        return [r["entity"]["id"] for r in SandboxClient(sandbox.url).bulk(*batch)]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(4)))
    assert all(ids == answers[0] for ids in answers) and len(set(answers[0])) == 20
    assert sandbox.stats()["customers"] == before + 20
