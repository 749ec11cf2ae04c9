"""A stored customer in the form the API returns it: profiles, loyalty and association details.

The fields follow the reference's sample response of ``POST /v2/customers/bulk`` (customers.md,
"Associate Customer with Customer/Hierarchy"): attribution with till objects, channels with
``meta``/``attributes``, ``identifiersAll``, ``segments``, and association details with ids.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import zlib

from .store import Store

# What the reference answers in a channel's meta when nothing was sent.
DEFAULT_CHANNEL_META = {"residence": False, "office": False}


def role_of(hierarchy: dict, code: str | None) -> dict | None:
    """Return the role of a hierarchy definition with this code."""
    return next((r for r in hierarchy["roles"] if r["code"] == code), None)


@functools.lru_cache(maxsize=256)
def till(name: str | None) -> dict:
    """The till object the reference answers as ``createdBy``/``modifiedBy`` (ids made up, stable per name).

    Remembered per name (twice per profile of every reply): the same dict goes into many
    replies, which only serialise it; do not modify it.
    """
    name = name or ""
    return {"id": 15_000_000 + zlib.crc32(name.encode()) % 1_000_000, "code": name, "description": "",
            "name": name, "type": "TILL", "adminType": "GENERAL", "isActive": True, "isOuEnabled": True,
            "timeZoneId": 0, "currencyId": 0, "languageId": -1}


def _channel(stored: dict) -> dict:
    return dict(stored, meta={**DEFAULT_CHANNEL_META, **(stored.get("meta") or {})},
                attributes=stored.get("attributes") or {})


def _profiles(store: Store, conn: sqlite3.Connection, row: sqlite3.Row) -> list[dict]:
    identifiers = []
    for ident in store.identifiers_of(conn, row["id"]):
        item = {"type": ident["type"], "value": ident["value"]}
        if ident["extra"]:
            item.update(json.loads(ident["extra"]))
        identifiers.append(item)
    profiles = []
    for stored in json.loads(row["profile"]):
        profiles.append(dict(
            stored, identifiers=identifiers, userId=row["id"], accountId=stored.get("accountId") or "",
            fields=stored.get("fields") or {}, commChannels=[_channel(c) for c in stored.get("commChannels") or []],
            attribution={"createDate": stored.get("createDate") or row["created_at"],
                         "createdBy": till(row["created_by"]), "modifiedBy": till(row["modified_by"]),
                         "modifiedDate": row["modified_at"]},
            conflictingProfileList=[], autoUpdateTime=row["modified_at"], identifiersAll=identifiers))
    return profiles


def ref_form(store: Store, conn: sqlite3.Connection, customer_id: int | None) -> dict | None:
    """A parent or child as ``associationDetails`` answers it: profiles and extended fields."""
    row = store.customer(conn, customer_id) if customer_id is not None else None
    if row is None:
        return None
    return {"profiles": _profiles(store, conn, row), "extendedFields": json.loads(row["extended_fields"])}


def failed_entry(ref, error: dict) -> dict:
    """A child of ``childCustomers`` that failed: as sent, with its error and no id."""
    return {"id": None, "profiles": [p.to_api() for p in ref.profiles], "associationDetails": None,
            "extendedFields": ref.extendedFields, "warnings": [], "errors": [error]}


def customer_entity(store: Store, conn: sqlite3.Connection, customer_id: int, *, new: bool | None = None,
                    child: bool | None = None, warnings: list | None = None, child_role_code: str | None = None,
                    child_customers: list | None = None,
                    parent_customer: dict | None = None) -> dict:
    """Return the customer as the API returns it."""
    row = store.customer(conn, customer_id)
    association = _association(store, conn, row, new=new, child=child, child_role_code=child_role_code)
    if association is not None and child_customers is not None:
        association["childCustomers"] = child_customers
    if association is not None and parent_customer is not None:
        association["parentCustomer"] = parent_customer
    return {
        "id": customer_id, "profiles": _profiles(store, conn, row),
        "loyaltyInfo": {"loyaltyType": row["loyalty_type"]},
        "loyaltyProgramEnrollments": json.loads(row["enrollments"]), "segments": {},
        "referralCode": row["referral_code"], "associationDetails": association,
        "extendedFields": json.loads(row["extended_fields"]), "warnings": list(warnings or []),
    }


def _association(store: Store, conn: sqlite3.Connection, row: sqlite3.Row, *, new: bool | None, child: bool | None,
                 child_role_code: str | None) -> dict | None:
    if row["hierarchy_id"] is None:
        return None
    hierarchy = store.hierarchy_by_id(conn, row["hierarchy_id"])
    if hierarchy is None:
        return None
    role = role_of(hierarchy, row["role_code"]) or {}
    parent = store.customer(conn, row["parent_id"]) if row["parent_id"] is not None else None
    parent_role = role_of(hierarchy, parent["role_code"]) if parent is not None else None
    if parent_role is None:
        parent_role = next((r for r in hierarchy["roles"] if r.get("childRoleCode") == row["role_code"]), None)
    company = store.company_by_id(conn, row["company_id"]) if row["company_id"] is not None else None
    return {
        "hierarchyCode": hierarchy["code"], "hierarchyId": hierarchy["id"],
        "roleCode": row["role_code"], "roleId": role.get("id"),
        "fleetCompany": {"externalId": company["external_id"], "companyId": company["id"]} if company else None,
        "parentCustomerId": row["parent_id"],
        "parentRoleId": parent_role["id"] if parent_role else None,
        "skipLevelAllowed": bool(hierarchy.get("skipRoleAllowed")),
        "new": bool(new) if new is not None else False,
        "childCustomer": bool(child) if child is not None else row["parent_id"] is not None,
        "childRoleCode": child_role_code or role.get("childRoleCode"),
    }
