"""A stored customer in the form the API returns it: profiles, loyalty and association details."""

from __future__ import annotations

import json
import sqlite3

from .store import Store


def role_of(hierarchy: dict, code: str | None) -> dict | None:
    """Return the role of a hierarchy definition with this code."""
    return next((r for r in hierarchy["roles"] if r["code"] == code), None)


def customer_entity(store: Store, conn: sqlite3.Connection, customer_id: int, *, new: bool | None = None,
                    child: bool | None = None, warnings: list | None = None,
                    child_role_code: str | None = None) -> dict:
    """Return the customer as the API returns it."""
    row = store.customer(conn, customer_id)
    identifiers = []
    for ident in store.identifiers_of(conn, customer_id):
        item = {"type": ident["type"], "value": ident["value"]}
        if ident["extra"]:
            item.update(json.loads(ident["extra"]))
        identifiers.append(item)
    profiles = []
    for stored in json.loads(row["profile"]):
        profile = dict(stored, identifiers=identifiers, userId=customer_id,
                       accountId=stored.get("accountId") or "",
                       attribution={"createDate": stored.get("createDate") or row["created_at"],
                                    "createdBy": row["created_by"], "modifiedBy": row["modified_by"],
                                    "modifiedDate": row["modified_at"]},
                       conflictingProfileList=[], autoUpdateTime=row["modified_at"], identifiersAll=identifiers)
        profiles.append(profile)
    return {
        "id": customer_id, "profiles": profiles, "loyaltyInfo": {"loyaltyType": row["loyalty_type"]},
        "loyaltyProgramEnrollments": json.loads(row["enrollments"]), "segments": {},
        "referralCode": row["referral_code"],
        "associationDetails": _association(store, conn, row, new=new, child=child, child_role_code=child_role_code),
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
