"""Endpoint handlers: OAuth tokens, customers (bulk, lookups), companies, fleet hierarchies."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from .auth import AuthError, Authenticator
from .config import SandboxConfig
from .customers import CustomerService
from .models import (Codes, CompanyBody, CompanyUpdate, CustomerElement, HierarchyBody, IdentifierType,
                     TokenRequest)
from .openapi import openapi_document
from .reply import Reply, all_failed_reply
from .stats import Stats
from .store import MAX_SQLITE_INT, Store, dumps, now_iso

IDENTIFIER_NAMES = get_args(IdentifierType)
SEED_HIERARCHY = {
    "code": "code-association2", "name": "Code association 2",
    "roles": [
        {"code": "GFA", "childRoleCode": "SFA", "maxChild": 5000, "pointsAggregationRole": True},
        {"code": "SFA", "childRoleCode": "FA", "maxChild": 5000, "pointsAggregationRole": False},
        {"code": "FA", "childRoleCode": "FC", "maxChild": 5000, "pointsAggregationRole": False},
        {"code": "FC", "maxChild": 5000, "pointsAggregationRole": False},
    ],
    "skipRoleAllowed": False, "hierarchyCreationStrict": False, "autoGroupCreationEnabled": False,
}


class ApiCodes:
    """Whole-request codes of ``/v2/companies`` and ``/v2/fleetHierarchy`` (group-loyalty.md, "Response Codes")."""

    HIERARCHY_CODE_EXISTS = 1600
    TOO_FEW_ROLES = 1601
    TOO_MANY_ROLES = 1602
    ROLE_CODE_EMPTY = 1603
    MAX_CHILD_NEGATIVE = 1604
    MAX_CHILD_OVER_LIMIT = 1605
    DUPLICATE_ROLE_CODES = 1606
    CHILD_ROLE_CODE_INVALID = 1607
    CYCLIC_HIERARCHY = 1608
    HIERARCHY_INVALID = 1609
    HIERARCHY_CODE_EMPTY = 1613
    AGGREGATION_ROLE_MISSING = 1614
    PERMISSION_CODE_INVALID = 1641
    AGGREGATION_ROLE_NOT_UNIQUE = 1649
    HIERARCHY_NOT_FOUND = 1701
    COMPANY_EXISTS = 1702
    PARENT_COMPANY_NOT_FOUND = 1703
    COMPANY_NOT_FOUND = 1704
    COMPANY_INACTIVE = 1705
    COMPANY_CANNOT_BE_ACTIVATED = 1706
    EXTERNAL_ID_EMPTY = 1707
    COMPANY_KEY_MISSING = 1708
    OWN_PARENT = 1709
    CYCLIC_PARENTING = 1710
    HIERARCHY_UPDATE_NOT_ALLOWED = 1711


# Create Fleet Hierarchy: "at least 2 roles ... up to 8 (max)", "maxChild ... Maximum value: 30000";
# the permission codes are those Create and Update Fleet Hierarchy list.
MIN_ROLES, MAX_ROLES, MAX_CHILD = 2, 8, 30000
PERMISSION_CODES = ("block_points_redemption", "block_points_transfer", "earn_points", "burn_points")


class ApiError(Exception):
    """A whole-request error: HTTP status, contract code, message."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# A whole bulk body parsed and validated in one pass (pydantic's own JSON parser): about a
# third less CPU than json.loads and a model per element. Any failure takes the slow path,
# which gives the per-element messages (and the JSON, surrogate and encoding checks).
_BULK_BODY = TypeAdapter(list[CustomerElement])


def _json(body: bytes) -> Any:
    if not body:
        raise ApiError(400, Codes.INVALID_INPUT, "Request body is empty: a JSON document is required")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, Codes.INVALID_INPUT, f"Malformed JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(body):
        # JSON lets "\ud800" through, but a lone surrogate is no text: nothing could store it.
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, Codes.INVALID_INPUT, "Malformed JSON: lone UTF-16 surrogate in a string") from None
    return data


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{prefix}{'.' if prefix and loc else ''}{loc}: {err['msg']}")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _validate(model: type[BaseModel], data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ApiError(400, Codes.INVALID_INPUT, f"{what} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, Codes.INVALID_INPUT, f"Invalid {what}: {_describe(exc)}") from None


def _int_param(query: dict, name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, Codes.INVALID_INPUT, f"Query parameter {name} must be an integer") from None
    return number if 0 < number <= MAX_SQLITE_INT else -1


def _check_roles(definition: HierarchyBody) -> None:
    """The role rules of Create Fleet Hierarchy, each with its code from "Response Codes"."""
    roles = definition.roles
    if any(_blank(r.code) for r in roles):
        raise ApiError(400, ApiCodes.ROLE_CODE_EMPTY, "Fleet role code cannot be empty or null")
    codes = [r.code for r in roles]
    if len(set(codes)) != len(codes):
        raise ApiError(400, ApiCodes.DUPLICATE_ROLE_CODES, "Duplicate fleet role codes passed in the payload")
    bad = [r.childRoleCode for r in roles if r.childRoleCode is not None and r.childRoleCode not in codes]
    if bad:
        raise ApiError(400, ApiCodes.CHILD_ROLE_CODE_INVALID, f"Invalid child role code passed {bad[0]}")
    child_of = {r.code: r.childRoleCode for r in roles}
    for start in codes:
        seen, code = set(), start
        while code is not None:
            if code in seen:
                raise ApiError(400, ApiCodes.CYCLIC_HIERARCHY, "Cyclic hierarchy is not supported")
            seen.add(code)
            code = child_of.get(code)
    if len(roles) < MIN_ROLES:
        raise ApiError(400, ApiCodes.TOO_FEW_ROLES, f"Fleet minimum number of roles {MIN_ROLES} not met")
    if len(roles) > MAX_ROLES:
        raise ApiError(400, ApiCodes.TOO_MANY_ROLES, f"Fleet maximum number of roles {MAX_ROLES} exceeded")
    for role in roles:
        if role.maxChild is not None and role.maxChild < 0:
            raise ApiError(400, ApiCodes.MAX_CHILD_NEGATIVE, "Fleet max child per role cannot be negative")
        if role.maxChild is not None and role.maxChild > MAX_CHILD:
            raise ApiError(400, ApiCodes.MAX_CHILD_OVER_LIMIT,
                           f"Max limit of {MAX_CHILD} on total number of child per role exceeded for {role.code}")
        bad_permission = next((p.permissionCode for p in role.permissions
                               if p.permissionCode not in PERMISSION_CODES), None)
        if bad_permission is not None:
            raise ApiError(400, ApiCodes.PERMISSION_CODE_INVALID, f"Invalid permission code {bad_permission} passed")
    aggregating = sum(1 for r in roles if r.pointsAggregationRole)
    if aggregating > 1:
        raise ApiError(400, ApiCodes.AGGREGATION_ROLE_NOT_UNIQUE, "Only one role should be marked as points "
                                                                  "aggregation role")
    if definition.autoGroupCreationEnabled and not aggregating:
        raise ApiError(400, ApiCodes.AGGREGATION_ROLE_MISSING, "Any one role needs to be marked as aggregation "
                                                               "level for auto group creation to be enabled")


class GroupLoyaltyApi:
    """The handlers of ``/v2/companies`` and ``/v2/fleetHierarchy`` (group-loyalty.md), over the Store."""

    store: Store

    # --- companies --------------------------------------------------------------------

    def _company_json(self, conn: sqlite3.Connection, row) -> dict:
        """A company as Add/Get/Update Company answer it (plus parentCompany as Get Org Companies shows it)."""
        parent = self.store.company_by_id(conn, row["parent_id"]) if row["parent_id"] else None
        return {
            "externalId": row["external_id"], "companyId": row["id"], "name": row["name"],
            "hierarchyDefinitionCode": row["hierarchy_code"], "isActive": bool(row["is_active"]),
            "extendedFields": json.loads(row["extended_fields"] or "{}"),
            "parentCompany": ({"externalId": parent["external_id"], "companyId": parent["id"], "name": parent["name"]}
                              if parent else None),
            "createdOn": row["created_at"], "lastUpdatedOn": row["modified_at"], "warnings": [],
        }

    def _company_row(self, conn, query):
        """The company ``?externalId=`` or ``?id=`` names (active or not): 1708 without a key, 1704 unknown."""
        external_id, company_id = query.get("externalId"), _int_param(query, "id")
        if not external_id and company_id is None:
            raise ApiError(400, ApiCodes.COMPANY_KEY_MISSING, "Fleet company identifiers ID/externalID should pass")
        row = (self.store.company_by_external_id(conn, external_id) if external_id
               else self.store.company_by_id(conn, company_id))
        if row is None:
            raise ApiError(404, ApiCodes.COMPANY_NOT_FOUND,
                           f"Company does not exist with given ID/externalID {external_id or query.get('id')}")
        return row

    @staticmethod
    def _check_external_ids(data: Any, *, required: bool) -> None:
        """1707 for a null or empty externalId of the company or of its parentCompany."""
        if not isinstance(data, dict):
            return
        if (required or "externalId" in data) and _blank(data.get("externalId")):
            raise ApiError(400, ApiCodes.EXTERNAL_ID_EMPTY, "Fleet company externalID cannot be null or empty")
        parent = data.get("parentCompany")
        if isinstance(parent, dict) and _blank(parent.get("externalId")):
            raise ApiError(400, ApiCodes.EXTERNAL_ID_EMPTY, "Fleet parent company externalID cannot be null or empty")

    def _parent_company(self, conn, external_id: str, own_external_id: str):
        """The row of a parentCompany: 1709 itself, 1703 unknown, 1705 inactive."""
        if external_id == own_external_id:
            raise ApiError(400, ApiCodes.OWN_PARENT, "Fleet company cannot be parent company itself")
        parent = self.store.company_by_external_id(conn, external_id)
        if parent is None:
            raise ApiError(400, ApiCodes.PARENT_COMPANY_NOT_FOUND,
                           f"Parent company externalID {external_id} does not exist")
        if not parent["is_active"]:
            raise ApiError(400, ApiCodes.COMPANY_INACTIVE, f"Fleet company is inactive: {external_id}")
        return parent

    def get_company(self, query, body, principal):
        """``GET /v2/companies?externalId=`` or ``?id=`` (an inactive company answers ``isActive: false``)."""
        with self.store.reading() as conn:
            return Reply(200, self._company_json(conn, self._company_row(conn, query)))

    def create_company(self, query, body, principal):
        """``POST /v2/companies``: one company; its hierarchy and parent company must exist."""
        data = _json(body)
        self._check_external_ids(data, required=True)
        request = _validate(CompanyBody, data, "company")
        with self.store.transaction() as conn:
            if self.store.hierarchy_by_code(conn, request.hierarchyDefinitionCode) is None:
                raise ApiError(400, ApiCodes.HIERARCHY_NOT_FOUND,
                               f"Fleet hierarchy code {request.hierarchyDefinitionCode} does not exist")
            if self.store.company_by_external_id(conn, request.externalId) is not None:
                raise ApiError(400, ApiCodes.COMPANY_EXISTS, f"Company externalID {request.externalId} already exists")
            parent_id = None
            if request.parentCompany is not None:
                parent_id = self._parent_company(conn, request.parentCompany.externalId, request.externalId)["id"]
            company_id = self.store.insert_company(
                conn, external_id=request.externalId, name=request.name,
                hierarchy_code=request.hierarchyDefinitionCode, extended_fields=request.extendedFields,
                parent_id=parent_id)
            return Reply(200, self._company_json(conn, self.store.company_by_id(conn, company_id)))

    def update_company(self, query, body, principal):
        """``PUT /v2/companies?externalId=`` or ``?id=``: name, externalId, extended fields, parent."""
        data = _json(body)
        self._check_external_ids(data, required=False)
        request = _validate(CompanyUpdate, data, "company update")
        with self.store.transaction() as conn:
            row = self._company_row(conn, query)
            if not row["is_active"]:
                if request.isActive:
                    raise ApiError(400, ApiCodes.COMPANY_CANNOT_BE_ACTIVATED, "Fleet company cannot be activated")
                raise ApiError(400, ApiCodes.COMPANY_INACTIVE, f"Fleet company is inactive: {row['external_id']}")
            if request.hierarchyDefinitionCode is not None and request.hierarchyDefinitionCode != row["hierarchy_code"]:
                raise ApiError(400, ApiCodes.HIERARCHY_UPDATE_NOT_ALLOWED, "Fleet hierarchy update is not allowed")
            external_id = request.externalId or row["external_id"]
            if external_id != row["external_id"] and self.store.company_by_external_id(conn, external_id) is not None:
                raise ApiError(400, ApiCodes.COMPANY_EXISTS, f"Company externalID {external_id} already exists")
            parent_id = row["parent_id"]
            if request.parentCompany is not None:
                parent = self._parent_company(conn, request.parentCompany.externalId, row["external_id"])
                if self._descends_from(conn, parent, row["id"]):
                    raise ApiError(400, ApiCodes.CYCLIC_PARENTING, "Cyclic parenting not supported")
                parent_id = parent["id"]
            conn.execute("UPDATE companies SET external_id=?, name=?, extended_fields=?, parent_id=?, modified_at=?"
                         " WHERE id=?",
                         (external_id, request.name or row["name"],
                          dumps(request.extendedFields) if request.extendedFields is not None
                          else row["extended_fields"], parent_id, now_iso(), row["id"]))
            return Reply(200, self._company_json(conn, self.store.company_by_id(conn, row["id"])))

    def _descends_from(self, conn, company, ancestor_id: int) -> bool:
        """Whether ``ancestor_id`` is ``company`` or one of its parents (a parent chain, so no loop)."""
        seen = set()
        while company is not None and company["id"] not in seen:
            if company["id"] == ancestor_id:
                return True
            seen.add(company["id"])
            company = self.store.company_by_id(conn, company["parent_id"]) if company["parent_id"] else None
        return False

    def delete_company(self, query, body, principal):
        """``DELETE /v2/companies?externalId=`` or ``?id=``: the company and its sub-companies go inactive."""
        with self.store.transaction() as conn:
            row = self._company_row(conn, query)
            conn.execute("WITH RECURSIVE sub(id) AS (SELECT ? UNION SELECT c.id FROM companies c JOIN sub"
                         " ON c.parent_id = sub.id) UPDATE companies SET is_active=0, modified_at=?"
                         " WHERE is_active=1 AND id IN sub", (row["id"], now_iso()))
            return Reply(200, self._company_json(conn, self.store.company_by_id(conn, row["id"])))

    # --- hierarchies ------------------------------------------------------------------

    @staticmethod
    def _hierarchy_json(definition: dict) -> dict:
        """A stored definition as Get Hierarchy Details answers it (roles carry ``hierarchyId``)."""
        answer = dict(definition, active=definition.get("isActive", True))
        answer["roles"] = [dict(role, hierarchyId=definition["id"]) for role in definition["roles"]]
        return answer

    def all_hierarchies(self, query, body, principal):
        """``GET /v2/fleetHierarchy/all``."""
        with self.store.reading() as conn:
            return Reply(200, {"entity": [self._hierarchy_json(d) for d in self.store.hierarchies(conn)],
                               "warnings": []})

    def get_hierarchy(self, query, body, principal):
        """``GET /v2/fleetHierarchy?id=N`` or ``?code=C``: 1609 if no active hierarchy has it."""
        hierarchy_id, code = _int_param(query, "id"), query.get("code")
        if hierarchy_id is None and not code:
            raise ApiError(400, Codes.INVALID_INPUT, "Query parameter id or code is required")
        with self.store.reading() as conn:
            if hierarchy_id is not None:
                definition = self.store.hierarchy_by_id(conn, hierarchy_id) if hierarchy_id > 0 else None
            else:
                definition = self.store.hierarchy_by_code(conn, code)
        if definition is None:
            raise ApiError(404, ApiCodes.HIERARCHY_INVALID,
                           f"Fleet hierarchy ID/code {query.get('id') or code} is invalid")
        return Reply(200, dict(self._hierarchy_json(definition), warnings=[]))

    def create_hierarchy(self, query, body, principal):
        """``POST /v2/fleetHierarchy``."""
        definition = _validate(HierarchyBody, _json(body), "hierarchy definition")
        with self.store.transaction() as conn:
            new_id = self._insert_hierarchy(conn, definition)
        return Reply(200, {"entity": new_id, "warnings": []})

    def _insert_hierarchy(self, conn, definition: HierarchyBody) -> int:
        if _blank(definition.code):
            raise ApiError(400, ApiCodes.HIERARCHY_CODE_EMPTY, "Fleet hierarchy code cannot be null or empty")
        if self.store.hierarchy_by_code(conn, definition.code) is not None:
            raise ApiError(400, ApiCodes.HIERARCHY_CODE_EXISTS, f"Fleet code {definition.code} exists")
        _check_roles(definition)
        stamp = now_iso()
        roles = [{"code": r.code, "childRoleCode": r.childRoleCode, "maxChild": r.maxChild,
                  "pointsAggregationRole": r.pointsAggregationRole,
                  "permissions": [p.model_dump() for p in r.permissions], "createdOn": stamp}
                 for r in definition.roles]
        # Name is optional in the reference; the stored one falls back to the code (assumption).
        data = {"code": definition.code, "name": definition.name or definition.code, "roles": roles,
                "skipRoleAllowed": definition.skipRoleAllowed,
                "hierarchyCreationStrict": definition.hierarchyCreationStrict,
                "autoGroupCreationEnabled": definition.autoGroupCreationEnabled,
                "default": definition.default, "createdOn": stamp}
        if definition.description is not None:
            data["description"] = definition.description
        return self.store.insert_hierarchy(conn, data)

    def seed_hierarchies(self, hierarchy_file: str | None) -> None:
        """Make sure the default definition and those of ``--hierarchy-file`` exist (by code)."""
        definitions = [SEED_HIERARCHY]
        if hierarchy_file:
            with open(hierarchy_file, encoding="utf-8") as fh:
                loaded = json.load(fh)
            definitions += loaded if isinstance(loaded, list) else [loaded]
        with self.store.transaction() as conn:
            for raw in definitions:
                definition = HierarchyBody.model_validate(raw)
                if self.store.hierarchy_by_code(conn, definition.code) is None:
                    self._insert_hierarchy(conn, definition)


class Api(GroupLoyaltyApi):
    """The handlers, each ``(query, body, principal) -> Reply``, over the parts of the server state they use."""

    def __init__(self, config: SandboxConfig, store: Store, auth: Authenticator, stats: Stats,
                 customers: CustomerService):
        self.config, self.store, self.auth, self.stats, self.customers = config, store, auth, stats, customers

    def routes(self) -> dict[str, dict]:
        """Path -> method -> handler."""
        document = openapi_document()
        return {
            "/v3/oauth/token/generate": {"POST": self.token},
            "/v2/customers/bulk": {"POST": self.bulk, "PUT": self.bulk_update},
            "/v2/customers/lookup": {"GET": self.lookup},
            "/v2/customers/lookup/customerDetails": {"GET": self.customer_details},
            "/v2/companies": {"GET": self.get_company, "POST": self.create_company, "PUT": self.update_company,
                              "DELETE": self.delete_company},
            "/v2/fleetHierarchy": {"GET": self.get_hierarchy, "POST": self.create_hierarchy},
            "/v2/fleetHierarchy/all": {"GET": self.all_hierarchies},
            "/__sandbox/stats": {"GET": self.sandbox_stats},
            "/openapi.json": {"GET": lambda q, b, p: Reply(200, document)},
        }

    # --- auth -------------------------------------------------------------------------

    def token(self, query, body, principal):
        """``POST /v3/oauth/token/generate``."""
        request = _validate(TokenRequest, _json(body), "token request")
        try:
            token = self.auth.issue_token(request.key, request.secret)
        except AuthError as exc:
            return Reply(401, {"data": None, "errors": [{"status": False, "code": 401, "message": str(exc)}]})
        self.stats.token()
        return Reply(200, {"data": {"accessToken": token, "ttlSeconds": self.config.token_ttl},
                           "errors": None})

    # --- customers --------------------------------------------------------------------

    def bulk_update(self, query, body, principal):
        """``PUT /v2/customers/bulk?source=``: update registered customers; ``source`` is mandatory."""
        if not query.get("source"):
            raise ApiError(400, Codes.INVALID_INPUT, "Invalid input: query parameter source is required")
        return self.bulk(query, body, principal, update=True)

    def bulk(self, query, body, principal, update: bool = False):
        """``POST /v2/customers/bulk``: validate the whole batch first, then process it."""
        elements = self._valid_bulk_body(body)
        if elements is None or not 0 < len(elements) <= self.config.batch_limit:
            elements = self._bulk_elements(body)  # raises the whole-request error
        results = self.customers.bulk(elements, principal, update=update, source=query.get("source") or None,
                                      account_id=query.get("accountId") or None)
        failed = sum(1 for r in results if r["errors"])
        self.stats.bulk(len(results), len(results) - failed, failed)
        if failed == len(results):
            return all_failed_reply(results, self.config.error_form)
        return Reply(200, results)

    @staticmethod
    def _valid_bulk_body(body: bytes) -> list[CustomerElement] | None:
        """The elements of a body valid as a whole (UTF-8, no escaped surrogate), else None."""
        if not body or _SURROGATE_ESCAPE.search(body):
            return None
        try:
            return _BULK_BODY.validate_json(body)
        except (ValidationError, ValueError, RecursionError):
            return None

    def _bulk_elements(self, body: bytes) -> list[CustomerElement]:
        """The elements of a bulk body, or the whole-request error naming what is wrong with it."""
        data = _json(body)
        if not isinstance(data, list):
            raise ApiError(400, Codes.INVALID_INPUT, "Request body must be a JSON array of customer elements")
        if not data:
            raise ApiError(400, Codes.INVALID_INPUT, "Request body must not be an empty array")
        limit = self.config.batch_limit
        if len(data) > limit:
            raise ApiError(400, Codes.BATCH_LIMIT_EXCEEDED,
                           f"Batch limit exceeded: {len(data)} elements, at most {limit} allowed")
        elements, problems = [], []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                problems.append(f"element[{i}]: must be a JSON object")
                continue
            try:
                elements.append(CustomerElement.model_validate(item))
            except ValidationError as exc:
                problems.append(_describe(exc, f"element[{i}]"))
        if problems:
            raise ApiError(400, Codes.INVALID_INPUT, "Invalid input: " + " | ".join(problems[:10]))
        return elements

    def _identifier(self, query) -> tuple[str, str]:
        if not query.get("source"):
            raise ApiError(400, Codes.INVALID_INPUT, "Query parameter source is required")
        name, value = query.get("identifierName"), query.get("identifierValue")
        if not name or not value:
            raise ApiError(400, Codes.INVALID_INPUT, "Query parameters identifierName and identifierValue are required")
        if name not in IDENTIFIER_NAMES:
            raise ApiError(400, Codes.INVALID_INPUT, f"Unknown identifierName {name!r}")
        return name, value

    def _not_found(self):
        return ApiError(404, Codes.CUSTOMER_NOT_FOUND, "No customer found with the given identifier")

    def lookup(self, query, body, principal):
        """``GET /v2/customers/lookup``: the id of the customer holding an identifier."""
        customer_id = self.customers.lookup(*self._identifier(query))
        if customer_id is None:
            raise self._not_found()
        return Reply(200, {"entity": customer_id, "warnings": []})

    def customer_details(self, query, body, principal):
        """``GET /v2/customers/lookup/customerDetails``: the full customer."""
        customer_id = self.customers.lookup(*self._identifier(query))
        if customer_id is None:
            raise self._not_found()
        return Reply(200, self.customers.details(customer_id))

    # --- sandbox ----------------------------------------------------------------------

    def sandbox_stats(self, query, body, principal):
        """``GET /__sandbox/stats``: counters since start plus what the db holds."""
        snapshot = self.stats.snapshot()
        snapshot.update(self.store.counts())
        return Reply(200, snapshot)
