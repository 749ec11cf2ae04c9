"""The OpenAPI 3.1 document of the sandbox (served at ``/openapi.json``)."""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from pydantic import BaseModel


from .models import CompanyBody, CustomerElement, HierarchyBody, TokenRequest

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict, required: list[str] | None = None, extra: bool = True) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if not extra:
        schema["additionalProperties"] = False
    return schema


INT = {"type": "integer"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
MAP = {"type": "object", "additionalProperties": True}
MESSAGES = {"type": "array", "items": _ref("Message")}

RESPONSE_SCHEMAS: dict[str, dict] = {
    "Message": _obj({"status": BOOL, "code": INT, "message": STR}, ["status", "code", "message"]),
    "Errors": _obj({"errors": {"type": "array", "items": _ref("Message"), "minItems": 1}}, ["errors"]),
    "TokenResponse": _obj({
        "data": _nullable(_obj({"accessToken": STR, "ttlSeconds": INT}, ["accessToken", "ttlSeconds"])),
        "errors": _nullable(MESSAGES)}, ["data", "errors"]),
    "StoredIdentifier": _obj({"type": STR, "value": STR}, ["type", "value"]),
    "Till": _obj({"id": INT, "code": STR, "description": STR, "name": STR, "type": STR, "adminType": STR,
                  "isActive": BOOL, "isOuEnabled": BOOL, "timeZoneId": INT, "currencyId": INT, "languageId": INT},
                 ["id", "code", "name", "type"]),
    "StoredChannel": _obj({"type": STR, "value": STR, "primary": BOOL, "verified": BOOL, "meta": MAP,
                           "attributes": MAP}, ["type", "value", "meta", "attributes"]),
    "StoredProfile": _obj({
        "firstName": STR, "lastName": STR, "source": STR, "accountId": STR, "userId": INT,
        "identifiers": {"type": "array", "items": _ref("StoredIdentifier")},
        "identifiersAll": {"type": "array", "items": _ref("StoredIdentifier")},
        "commChannels": {"type": "array", "items": _ref("StoredChannel")}, "fields": MAP,
        "attribution": _obj({"createDate": STR, "createdBy": _ref("Till"), "modifiedBy": _ref("Till"),
                             "modifiedDate": STR}, ["createDate", "createdBy", "modifiedBy", "modifiedDate"]),
        "conflictingProfileList": {"type": "array"}, "autoUpdateTime": STR},
        ["identifiers", "source", "userId", "accountId", "attribution", "commChannels", "fields",
         "conflictingProfileList", "autoUpdateTime", "identifiersAll"]),
    "StoredRef": _obj({"profiles": {"type": "array", "items": _ref("StoredProfile")}, "extendedFields": MAP},
                      ["profiles", "extendedFields"]),
    "StoredAssociation": _obj({
        "hierarchyCode": STR, "hierarchyId": INT, "roleCode": STR, "roleId": _nullable(INT),
        "fleetCompany": _nullable(_obj({"externalId": STR, "companyId": INT}, ["externalId", "companyId"])),
        "parentCustomerId": _nullable(INT), "parentRoleId": _nullable(INT), "skipLevelAllowed": BOOL,
        "new": BOOL, "childCustomer": BOOL, "childRoleCode": _nullable(STR),
        "parentCustomer": _ref("StoredRef"), "childCustomers": {"type": "array", "items": _ref("StoredRef")}},
        ["hierarchyCode", "hierarchyId", "roleCode", "fleetCompany", "parentCustomerId", "skipLevelAllowed",
         "new", "childCustomer"]),
    "Customer": _obj({
        "id": INT, "profiles": {"type": "array", "items": _ref("StoredProfile")},
        "loyaltyInfo": _obj({"loyaltyType": {"enum": ["loyalty", "non_loyalty"]}}, ["loyaltyType"]),
        "loyaltyProgramEnrollments": {"type": "array", "items": MAP}, "segments": MAP,
        "referralCode": _nullable(STR), "associationDetails": _nullable(_ref("StoredAssociation")),
        "extendedFields": MAP, "warnings": MESSAGES},
        ["id", "profiles", "loyaltyInfo", "segments", "referralCode", "associationDetails", "extendedFields",
         "warnings"]),
    "FailedChild": _obj({
        "id": {"type": "null"}, "profiles": {"type": "array", "items": MAP}, "associationDetails": {"type": "null"},
        "extendedFields": MAP, "warnings": MESSAGES, "errors": {"type": "array", "items": _ref("Message"),
                                                                  "minItems": 1}},
        ["id", "profiles", "errors", "warnings"]),
    "BulkResult": _obj({
        "entity": _nullable(_ref("Customer")),
        "childEntities": {"type": "array", "items": {"anyOf": [_ref("Customer"), _ref("FailedChild")]}},
        "childCount": INT, "childSuccessCount": INT, "childFailureCount": INT,
        "errors": MESSAGES, "warnings": MESSAGES},
        ["entity", "childEntities", "childCount", "childSuccessCount", "childFailureCount", "errors", "warnings"]),
    "Lookup": _obj({"entity": INT, "warnings": MESSAGES}, ["entity", "warnings"]),
    "Company": _obj({
        "companyId": INT, "externalId": STR, "name": STR, "hierarchyDefinitionCode": STR, "extendedFields": MAP,
        "parentCompany": _nullable(_obj({"externalId": STR, "companyId": INT}, ["externalId", "companyId"])),
        "isActive": BOOL, "createdOn": STR, "lastUpdatedOn": STR, "warnings": MESSAGES},
        ["companyId", "externalId", "name", "hierarchyDefinitionCode", "extendedFields", "parentCompany",
         "isActive", "warnings"]),
    "StoredHierarchy": _obj({
        "id": INT, "code": STR, "name": STR, "isActive": BOOL, "skipRoleAllowed": BOOL,
        "hierarchyCreationStrict": BOOL, "autoGroupCreationEnabled": BOOL,
        "roles": {"type": "array", "items": _obj({
            "id": INT, "code": STR, "childRoleCode": _nullable(STR), "maxChild": _nullable(INT),
            "pointsAggregationRole": BOOL}, ["id", "code"])}},
        ["id", "code", "name", "roles", "skipRoleAllowed", "isActive"]),
    "HierarchyList": _obj({"entity": {"type": "array", "items": _ref("StoredHierarchy")}, "warnings": MESSAGES},
                          ["entity"]),
    "CreatedId": _obj({"entity": INT, "warnings": MESSAGES}, ["entity", "warnings"]),
    "CompanyUpdate": _obj({
        "name": {"type": "string", "minLength": 1}, "extendedFields": _nullable(MAP),
        "hierarchyDefinitionCode": _nullable(STR), "externalId": _nullable(STR),
        "parentCompany": _nullable(_obj({"externalId": {"type": "string", "minLength": 1}}, ["externalId"]))}),
    "Stats": _obj({
        "uptimeSeconds": {"type": "number"}, "requestsTotal": INT, "rateLimited": INT, "faultsTotal": INT,
        "requests": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": INT}},
        "faults": {"type": "object", "additionalProperties": INT},
        "elements": _obj({"received": INT, "succeeded": INT, "failed": INT}),
        "tokensIssued": INT, "customers": INT, "companies": INT, "associations": INT, "hierarchies": INT},
        ["requests", "faults", "rateLimited", "customers", "companies", "associations"]),
}


def _request_schemas() -> dict[str, dict]:
    """Request bodies straight from the sandbox's pydantic models, so the document cannot drift."""
    schemas: dict[str, dict] = {}
    models: list[type[BaseModel]] = [CustomerElement, CompanyBody, HierarchyBody, TokenRequest]
    for model in models:
        schema = model.model_json_schema(ref_template=REF, mode="validation")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[model.__name__] = schema
    return schemas


def _json_content(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: dict, *codes: int, ok_status: str = "200") -> dict:
    texts = {400: "Invalid input (code 400), batch limit (1060) or a documented code of the resource",
             401: "Not authenticated", 404: "Not found", 429: "Rate limit exceeded; see Retry-After",
             500: "Internal error (fault injection)", 502: "Bad gateway (fault injection)",
             503: "Service unavailable (fault injection)"}
    responses = {ok_status: {"description": "OK", **_json_content(ok)}}
    for code in codes:
        entry: dict[str, Any] = {"description": texts[code], **_json_content(_ref("Errors"))}
        if code == 429:
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": INT, "required": True}}
        responses[str(code)] = entry
    return responses


API_ERRORS = (401, 429, 500, 502, 503)
SOURCE_PARAMS = [
    {"name": "source", "in": "query", "required": False, "schema": {"type": "string", "minLength": 1}},
    {"name": "accountId", "in": "query", "required": False, "schema": STR},
]
IDENTIFIER_PARAMS = [
    dict(SOURCE_PARAMS[0], required=True), SOURCE_PARAMS[1],
    {"name": "identifierName", "in": "query", "required": True,
     "schema": {"type": "string", "enum": ["mobile", "email", "externalId", "cardnumber", "wechat", "martjackId",
                                           "fbId", "tmall_uname", "cuid", "ali_uname", "jd_uname", "vip_uname",
                                           "mobilePush", "line", "unionId"]}},
    {"name": "identifierValue", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
]
COMPANY_KEY_PARAMS = [
    {"name": "externalId", "in": "query", "required": False, "schema": STR},
    {"name": "id", "in": "query", "required": False, "schema": INT},
]


def _paths() -> dict:
    results = {"type": "array", "items": _ref("BulkResult")}
    bulk_responses = _responses(results, 400, *API_ERRORS)
    bulk_responses["500"] = {"description": "All requests failed (--error-form 500: the per-element results; "
                                            "500-bare: code 500 only) or an injected fault",
                             **_json_content({"anyOf": [results, _ref("Errors")]})}
    bulk_body = {"required": True, **_json_content({"type": "array", "items": _ref("CustomerElement"),
                                                    "minItems": 1})}
    return {
        "/v3/oauth/token/generate": {"post": {
            "operationId": "generateToken", "summary": "Get an OAuth access token", "security": [],
            "requestBody": {"required": True, **_json_content(_ref("TokenRequest"))},
            "responses": {"200": {"description": "A token", **_json_content(_ref("TokenResponse"))},
                          "400": {"description": "Invalid input", **_json_content(_ref("Errors"))},
                          "401": {"description": "Wrong key or secret", **_json_content(_ref("TokenResponse"))},
                          **{str(c): {"description": "Injected fault", **_json_content(_ref("Errors"))}
                             for c in (500, 502, 503)}}}},
        "/v2/customers/bulk": {
            "post": {"operationId": "customersBulk", "summary": "Register and associate customers",
                     "parameters": SOURCE_PARAMS, "requestBody": bulk_body, "responses": bulk_responses},
            "put": {"operationId": "customersBulkUpdate",
                    "summary": "Update registered customers' details and association (elements also carry "
                               "the customer's fields at their top level)",
                    "parameters": [dict(SOURCE_PARAMS[0], required=True), SOURCE_PARAMS[1]],
                    "requestBody": bulk_body, "responses": bulk_responses}},
        "/v2/customers/lookup": {"get": {
            "operationId": "customerLookup", "summary": "The id of the customer holding an identifier",
            "parameters": IDENTIFIER_PARAMS, "responses": _responses(_ref("Lookup"), 400, 404, *API_ERRORS)}},
        "/v2/customers/lookup/customerDetails": {"get": {
            "operationId": "customerDetails", "summary": "The full customer holding an identifier",
            "parameters": IDENTIFIER_PARAMS, "responses": _responses(_ref("Customer"), 400, 404, *API_ERRORS)}},
        "/v2/companies": {
            "get": {"operationId": "getCompany", "summary": "A company by externalId or id",
                    "parameters": COMPANY_KEY_PARAMS, "responses": _responses(_ref("Company"), 400, 404, *API_ERRORS)},
            "post": {"operationId": "createCompany", "summary": "Create a fleet company",
                     "requestBody": {"required": True, **_json_content(_ref("CompanyBody"))},
                     "responses": _responses(_ref("Company"), 400, *API_ERRORS)},
            "put": {"operationId": "updateCompany", "summary": "Update name / extended fields of a company",
                    "parameters": [{"name": "externalId", "in": "query", "required": True, "schema": STR}],
                    "requestBody": {"required": True, **_json_content(_ref("CompanyUpdate"))},
                    "responses": _responses(_ref("Company"), 400, 404, *API_ERRORS)}},
        "/v2/fleetHierarchy": {
            "get": {"operationId": "getHierarchy", "summary": "One hierarchy definition",
                    "parameters": [{"name": "id", "in": "query", "required": True, "schema": INT}],
                    "responses": _responses(_ref("StoredHierarchy"), 400, 404, *API_ERRORS)},
            "post": {"operationId": "createHierarchy", "summary": "Create a hierarchy definition",
                     "requestBody": {"required": True, **_json_content(_ref("HierarchyBody"))},
                     "responses": _responses(_ref("CreatedId"), 400, *API_ERRORS)}},
        "/v2/fleetHierarchy/all": {"get": {
            "operationId": "allHierarchies", "summary": "Every active hierarchy definition",
            "responses": _responses(_ref("HierarchyList"), *API_ERRORS)}},
        "/__sandbox/stats": {"get": {
            "operationId": "sandboxStats", "summary": "Sandbox counters (no auth)", "security": [],
            "responses": {"200": {"description": "Counters", **_json_content(_ref("Stats"))}}}},
    }


@lru_cache(maxsize=1)
def _document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Capillary sandbox (associate.sandbox)", "version": "1.0.0",
                 "description": "The subset of Capillary's v2 customer, company and fleet hierarchy API this "
                                "project uses, as the local sandbox implements it."},
        "servers": [{"url": "/"}],
        "security": [{"basicAuth": []}, {"oauthToken": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic",
                              "description": "user:md5_hex(password), base64-encoded"},
                "oauthToken": {"type": "apiKey", "in": "header", "name": "X-CAP-API-OAUTH-TOKEN"}},
            "schemas": {**_request_schemas(), **RESPONSE_SCHEMAS},
        },
    }


def openapi_document() -> dict:
    """A fresh copy of the document."""
    return copy.deepcopy(_document())
