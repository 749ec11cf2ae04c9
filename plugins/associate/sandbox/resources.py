"""Endpoint handlers: OAuth tokens, customers (bulk, lookups), companies, fleet hierarchies."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from associate.models import Codes, CompanyRef, CompanyRequest, HierarchyDefinition, TokenRequest

from .auth import AuthError, Authenticator
from .config import SandboxConfig
from .customers import CustomerService
from .models import CustomerElement, IdentifierType
from .openapi import openapi_document
from .reply import Reply
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
    """Whole-request codes the contract lacks (sandbox choice)."""

    HIERARCHY_NOT_FOUND = 91030
    COMPANY_NOT_FOUND = 91032
    COMPANY_EXISTS = 91040
    COMPANY_HIERARCHY_FIXED = 91041
    COMPANY_EXTERNAL_ID_FIXED = 91042
    HIERARCHY_EXISTS = 91043
    HIERARCHY_INVALID = 91044


class ApiError(Exception):
    """A whole-request error: HTTP status, contract code, message."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class CompanyUpdate(BaseModel):
    """Body of ``PUT /v2/companies``: name and extended fields change; the rest must stay."""

    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(default=None, min_length=1)
    extendedFields: dict[str, Any] | None = None
    hierarchyDefinitionCode: str | None = None
    externalId: str | None = None
    parentCompany: CompanyRef | None = None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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


class Api:
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
            "/v2/companies": {"GET": self.get_company, "POST": self.create_company, "PUT": self.update_company},
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
        results = self.customers.bulk(elements, principal, update=update, source=query.get("source") or None,
                                      account_id=query.get("accountId") or None)
        failed = sum(1 for r in results if r["errors"])
        self.stats.bulk(len(results), len(results) - failed, failed)
        if failed == len(results) and self.config.all_failed_status == 500:
            return Reply(500, {"errors": [{"status": False, "code": Codes.ALL_FAILED,
                                           "message": "All requests failed"}], "response": results})
        return Reply(200, results)

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

    # --- companies --------------------------------------------------------------------

    def _company_json(self, conn: sqlite3.Connection, row) -> dict:
        parent = self.store.company_by_id(conn, row["parent_id"]) if row["parent_id"] else None
        return {
            "companyId": row["id"], "externalId": row["external_id"], "name": row["name"],
            "hierarchyDefinitionCode": row["hierarchy_code"],
            "extendedFields": json.loads(row["extended_fields"] or "{}"),
            "parentCompany": {"externalId": parent["external_id"], "companyId": parent["id"]} if parent else None,
            "isActive": bool(row["is_active"]), "createdOn": row["created_at"], "lastUpdatedOn": row["modified_at"],
            "warnings": [],
        }

    def _company_row(self, conn, query):
        external_id, company_id = query.get("externalId"), _int_param(query, "id")
        if not external_id and company_id is None:
            raise ApiError(400, Codes.INVALID_INPUT, "Query parameter externalId or id is required")
        row = (self.store.company_by_external_id(conn, external_id) if external_id
               else self.store.company_by_id(conn, company_id))
        if row is None:
            raise ApiError(404, ApiCodes.COMPANY_NOT_FOUND, "Company not found")
        return row

    def get_company(self, query, body, principal):
        """``GET /v2/companies?externalId=`` or ``?id=``."""
        with self.store.reading() as conn:
            return Reply(200, self._company_json(conn, self._company_row(conn, query)))

    def create_company(self, query, body, principal):
        """``POST /v2/companies``: one company; its hierarchy and parent company must exist."""
        request = _validate(CompanyRequest, _json(body), "company")
        with self.store.transaction() as conn:
            if self.store.hierarchy_by_code(conn, request.hierarchyDefinitionCode) is None:
                raise ApiError(400, ApiCodes.HIERARCHY_NOT_FOUND,
                               f"Hierarchy {request.hierarchyDefinitionCode!r} not found")
            if self.store.company_by_external_id(conn, request.externalId) is not None:
                raise ApiError(400, ApiCodes.COMPANY_EXISTS, f"Company {request.externalId!r} already exists")
            parent_id = None
            if request.parentCompany is not None:
                parent = self.store.company_by_external_id(conn, request.parentCompany.externalId)
                if parent is None:
                    raise ApiError(400, ApiCodes.COMPANY_NOT_FOUND,
                                   f"Parent company {request.parentCompany.externalId!r} not found")
                parent_id = parent["id"]
            company_id = self.store.insert_company(
                conn, external_id=request.externalId, name=request.name,
                hierarchy_code=request.hierarchyDefinitionCode, extended_fields=request.extendedFields,
                parent_id=parent_id)
            return Reply(200, self._company_json(conn, self.store.company_by_id(conn, company_id)))

    def update_company(self, query, body, principal):
        """``PUT /v2/companies?externalId=``: name and extended fields; the hierarchy cannot change."""
        request = _validate(CompanyUpdate, _json(body), "company update")
        with self.store.transaction() as conn:
            row = self._company_row(conn, query)
            if request.hierarchyDefinitionCode is not None and request.hierarchyDefinitionCode != row["hierarchy_code"]:
                raise ApiError(400, ApiCodes.COMPANY_HIERARCHY_FIXED, "The hierarchy of a company cannot change")
            if request.externalId is not None and request.externalId != row["external_id"]:
                raise ApiError(400, ApiCodes.COMPANY_EXTERNAL_ID_FIXED, "The external id of a company cannot change")
            parent_id = row["parent_id"]
            if request.parentCompany is not None:
                parent = self.store.company_by_external_id(conn, request.parentCompany.externalId)
                if parent is None or parent["id"] == row["id"]:
                    raise ApiError(400, ApiCodes.COMPANY_NOT_FOUND,
                                   f"Parent company {request.parentCompany.externalId!r} not found")
                parent_id = parent["id"]
            conn.execute("UPDATE companies SET name=?, extended_fields=?, parent_id=?, modified_at=? WHERE id=?",
                         (request.name or row["name"],
                          dumps(request.extendedFields) if request.extendedFields is not None
                          else row["extended_fields"], parent_id, now_iso(), row["id"]))
            return Reply(200, self._company_json(conn, self.store.company_by_id(conn, row["id"])))

    # --- hierarchies ------------------------------------------------------------------

    def all_hierarchies(self, query, body, principal):
        """``GET /v2/fleetHierarchy/all``."""
        with self.store.reading() as conn:
            return Reply(200, {"entity": self.store.hierarchies(conn), "warnings": []})

    def get_hierarchy(self, query, body, principal):
        """``GET /v2/fleetHierarchy?id=N``."""
        hierarchy_id = _int_param(query, "id")
        if hierarchy_id is None:
            raise ApiError(400, Codes.INVALID_INPUT, "Query parameter id is required")
        with self.store.reading() as conn:
            definition = self.store.hierarchy_by_id(conn, hierarchy_id) if hierarchy_id > 0 else None
        if definition is None:
            raise ApiError(404, ApiCodes.HIERARCHY_NOT_FOUND, "Hierarchy not found")
        return Reply(200, definition)

    def create_hierarchy(self, query, body, principal):
        """``POST /v2/fleetHierarchy``."""
        definition = _validate(HierarchyDefinition, _json(body), "hierarchy definition")
        with self.store.transaction() as conn:
            new_id = self._insert_hierarchy(conn, definition)
        return Reply(200, {"entity": new_id, "warnings": []})

    def _insert_hierarchy(self, conn, definition: HierarchyDefinition) -> int:
        codes = [r.code for r in definition.roles]
        if len(set(codes)) != len(codes):
            raise ApiError(400, ApiCodes.HIERARCHY_INVALID, "Role codes must be unique")
        bad = [r.childRoleCode for r in definition.roles if r.childRoleCode is not None and r.childRoleCode not in codes]
        if bad:
            raise ApiError(400, ApiCodes.HIERARCHY_INVALID, f"childRoleCode {bad[0]!r} is not a role of the definition")
        if self.store.hierarchy_by_code(conn, definition.code) is not None:
            raise ApiError(400, ApiCodes.HIERARCHY_EXISTS, f"Hierarchy {definition.code!r} already exists")
        data = definition.model_dump(mode="json", exclude={"id", "isActive"})
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
                definition = HierarchyDefinition.model_validate(raw)
                if self.store.hierarchy_by_code(conn, definition.code) is None:
                    self._insert_hierarchy(conn, definition)

    # --- sandbox ----------------------------------------------------------------------

    def sandbox_stats(self, query, body, principal):
        """``GET /__sandbox/stats``: counters since start plus what the db holds."""
        snapshot = self.stats.snapshot()
        snapshot.update(self.store.counts())
        return Reply(200, snapshot)
