"""Helpers for tests that drive the sandbox over HTTP: auth headers, element builders, a client."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os

import requests

TILL = ("store.server", "server123")
OAUTH = ("demo-key", "demo-secret")
HIERARCHY = "code-association2"
_serial = itertools.count(int.from_bytes(os.urandom(2), "big") * 1000)


def basic_header(user: str = TILL[0], password: str = TILL[1]) -> dict[str, str]:
    """``Authorization: Basic base64(user:md5_hex(password))``."""
    token = f"{user}:{hashlib.md5(password.encode()).hexdigest()}"
    return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}


def new_mobile() -> str:
    """A mobile number no other test uses (12 digits, Indian prefix)."""
    return f"91{next(_serial):010d}"


def new_key(prefix: str = "X") -> str:
    """A unique external id / company key."""
    return f"{prefix}{next(_serial)}"


def profile(mobile: str | None = None, *, email: str | None = None, external_id: str | None = None,
            **fields) -> dict:
    """A profile with the given identifiers (a fresh mobile if none is given)."""
    identifiers = []
    if mobile is None and email is None and external_id is None:
        mobile = new_mobile()
    if mobile is not None:
        identifiers.append({"type": "mobile", "value": mobile})
    if email is not None:
        identifiers.append({"type": "email", "value": email})
    if external_id is not None:
        identifiers.append({"type": "externalId", "value": external_id})
    return {"firstName": "Test", "lastName": "Customer", "identifiers": identifiers, "source": "INSTORE", **fields}


def ref(mobile: str) -> dict:
    """A parent/child customer object naming a customer by mobile."""
    return {"profiles": [{"identifiers": [{"type": "mobile", "value": mobile}]}]}


def element(mobile: str | None = None, *, role: str | None = None, company: str | None = None,
            parent: str | None = None, children: tuple[str, ...] = (), child_role: str | None = None,
            hierarchy: str = HIERARCHY, loyalty: str = "loyalty", **profile_kwargs) -> dict:
    """A bulk element; with ``role`` it carries associationDetails."""
    body: dict = {"profiles": [profile(mobile, **profile_kwargs)], "loyaltyInfo": {"loyaltyType": loyalty}}
    if role is not None:
        details: dict = {"hierarchyCode": hierarchy, "roleCode": role}
        if company is not None:
            details["fleetCompany"] = {"externalId": company}
        if parent is not None:
            details["parentCustomer"] = ref(parent)
        if children:
            details["childCustomers"] = [ref(c) for c in children]
        if child_role is not None:
            details["childRoleCode"] = child_role
        body["associationDetails"] = details
    return body


class SandboxClient:
    """A thin requests client for the sandbox (Basic auth unless headers are given)."""

    def __init__(self, url: str, headers: dict | None = None):
        self.url = url
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
        self.session.headers.update(headers if headers is not None else basic_header())

    def post(self, path: str, body=None, **kwargs) -> requests.Response:
        """POST a JSON body (or raw ``data=``)."""
        kwargs.setdefault("timeout", 30)
        if body is not None:
            kwargs["json"] = body
        return self.session.post(self.url + path, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET with query ``params=``."""
        kwargs.setdefault("timeout", 30)
        return self.session.get(self.url + path, **kwargs)

    def put(self, path: str, body, **kwargs) -> requests.Response:
        """PUT a JSON body."""
        kwargs.setdefault("timeout", 30)
        return self.session.put(self.url + path, json=body, **kwargs)

    def bulk(self, *elements: dict, expect: int | tuple[int, ...] = 200) -> list[dict]:
        """POST elements to the bulk endpoint; the per-element results."""
        response = self.post("/v2/customers/bulk", list(elements))
        assert response.status_code in ((expect,) if isinstance(expect, int) else expect), response.text
        body = response.json()
        return body["response"] if isinstance(body, dict) else body

    def put_bulk(self, *elements: dict, source: str | None = "INSTORE", account_id: str | None = None,
                 expect: int | tuple[int, ...] = 200) -> list[dict]:
        """PUT elements to the bulk endpoint (the update call, ``?source=``); the per-element results."""
        params = {k: v for k, v in (("source", source), ("accountId", account_id)) if v is not None}
        response = self.put("/v2/customers/bulk", list(elements), params=params)
        assert response.status_code in ((expect,) if isinstance(expect, int) else expect), response.text
        body = response.json()
        return body["response"] if isinstance(body, dict) else body

    def one(self, element_body: dict) -> dict:
        """Send one element; its result (which may carry errors)."""
        response = self.post("/v2/customers/bulk", [element_body])
        assert response.status_code in (200, 500), response.text
        body = response.json()
        return (body["response"] if isinstance(body, dict) else body)[0]

    def lookup(self, name: str, value: str) -> int | None:
        """The id holding an identifier, or None (404 / 8015)."""
        response = self.get("/v2/customers/lookup",
                            params={"source": "INSTORE", "identifierName": name, "identifierValue": value})
        if response.status_code == 404:
            assert response.json()["errors"][0]["code"] == 8015
            return None
        assert response.status_code == 200, response.text
        return response.json()["entity"]

    def details(self, name: str, value: str) -> dict:
        """The full customer holding an identifier."""
        response = self.get("/v2/customers/lookup/customerDetails",
                            params={"source": "INSTORE", "identifierName": name, "identifierValue": value})
        assert response.status_code == 200, response.text
        return response.json()

    def company(self, external_id: str, hierarchy: str = HIERARCHY, **extra) -> dict:
        """Create a company; its JSON."""
        response = self.post("/v2/companies", {"name": f"Company {external_id}", "externalId": external_id,
                                               "hierarchyDefinitionCode": hierarchy, **extra})
        assert response.status_code == 200, response.text
        return response.json()

    def hierarchy(self, code: str, roles: list[dict], **extra) -> int:
        """Create a hierarchy definition; its id."""
        response = self.post("/v2/fleetHierarchy", {"code": code, "name": code, "roles": roles, **extra})
        assert response.status_code == 200, response.text
        return response.json()["entity"]


def error_codes(result: dict) -> list[int]:
    """The error codes of one bulk result (element or child)."""
    return [e["code"] for e in result.get("errors") or []]


def sandbox_in_form(form: str, tmp_path_factory):
    """Run a sandbox answering errors in ``form`` (``--error-form``) for a module fixture; ``.form`` names it."""
    from associate.sandbox.launcher import SandboxProcess

    db = tmp_path_factory.mktemp(f"form-{form}") / "sandbox.db"
    with SandboxProcess(db, error_form=form) as running:
        running.form = form
        yield running


def company_request(external_id: str, name: str = "Acme Fleet", parent: str | None = None, **fields) -> dict:
    """A ``POST /v2/companies`` request in wire form (in the sandbox's default hierarchy)."""
    body = {"name": name, "externalId": external_id, "hierarchyDefinitionCode": HIERARCHY}
    if fields:
        body["extendedFields"] = fields
    if parent:
        body["parentCompany"] = {"externalId": parent}
    return body
