"""Customers: registration, matching by identifiers and association (their JSON form is ``entities``)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from associate.models import AssociationDetails, CustomerElement, CustomerRef

from .rules import (ConflictError, ElementError, accepted_extended_fields, check_registration_dates,
                    match_priority, normalize, refusal_key, resolve_identifiers)
from .entities import customer_entity, role_of
from .store import Store, dumps, now_iso


class AssociationCodes:
    """Element error codes the contract lacks for association failures (sandbox choice)."""

    HIERARCHY_NOT_FOUND = 91030
    ROLE_NOT_IN_HIERARCHY = 91031
    COMPANY_NOT_FOUND = 91032
    PARENT_ROLE_MISMATCH = 91033
    MAX_CHILD_EXCEEDED = 91034
    COMPANY_OTHER_HIERARCHY = 91035
    PARENT_NOT_ASSOCIATED = 91036
    HIERARCHY_CYCLE = 91037


def _role_fits(hierarchy: dict, parent_role: dict, child_role_code: str) -> bool:
    """A child's role must be its parent's childRoleCode, unless skipping levels is allowed."""
    if parent_role.get("childRoleCode") == child_role_code:
        return True
    return bool(hierarchy.get("skipRoleAllowed")) and role_of(hierarchy, child_role_code) is not None


class CustomerService:
    """The bulk call and the lookups, on top of the Store."""

    def __init__(self, store: Store):
        self.store = store

    # --- bulk -------------------------------------------------------------------------

    def bulk(self, elements: list[CustomerElement], principal: str) -> list[dict]:
        """Process a validated batch in one transaction; each element is atomic on its own."""
        results = []
        with self.store.transaction() as conn:
            for element in elements:
                try:
                    with self.store.transaction():
                        results.append(self._element(conn, element, principal))
                except ElementError as exc:
                    self._remember(conn, exc)
                    results.append({"entity": None, "childEntities": [], "childCount": 0, "childSuccessCount": 0,
                                    "childFailureCount": 0, "errors": [exc.as_message()], "warnings": []})
        return results

    def _element(self, conn: sqlite3.Connection, element: CustomerElement, principal: str) -> dict:
        check_registration_dates(element.profiles)
        resolved = resolve_identifiers(element.profiles, element.loyaltyInfo.loyaltyType)
        customer_id, is_new = self._upsert(conn, resolved.identifiers, element.profiles, principal,
                                           loyalty_type=element.loyaltyInfo.loyaltyType,
                                           extended_fields=accepted_extended_fields(element.extendedFields,
                                                                                    resolved.warnings),
                                           enrollments=[e.to_api() for e in element.loyaltyProgramEnrollments],
                                           referral_code=element.referralCode, update_profile=True)
        children: list[dict] = []
        ad = element.associationDetails
        child_role_code = None
        if ad is not None:
            hierarchy, role = self._associate(conn, customer_id, ad, principal)
            child_role_code = ad.childRoleCode or role.get("childRoleCode")
            for ref in ad.childCustomers:
                children.append(self._child(conn, customer_id, hierarchy, role, child_role_code, ref, principal))
        entity = customer_entity(self.store, conn, customer_id, new=is_new, child=False, warnings=resolved.warnings,
                             child_role_code=child_role_code)
        failed = sum(1 for c in children if c.get("errors"))
        return {"entity": entity, "childEntities": children, "childCount": len(children),
                "childSuccessCount": len(children) - failed, "childFailureCount": failed,
                "errors": [], "warnings": []}

    def _match(self, conn: sqlite3.Connection, identifiers: list[tuple[str, str, Any]]) -> int | None:
        """The stored customer these identifiers name; an identifier of another customer is an error."""
        owners = [(t, self.store.owner_of(conn, t, v)) for t, v, _ in identifiers]
        known = sorted(((match_priority(t), owner) for t, owner in owners if owner is not None))
        if not known:
            return None
        matched = known[0][1]
        conflicts = [id_type for id_type, owner in owners if owner is not None and owner != matched]
        if conflicts:
            # Owners are never removed, so a refused set stays refused, but more of its
            # identifiers may find owners later (in the same batch, even) and change which
            # one looks wrong: the first refusal decides the code, so a re-send gets it again.
            key = refusal_key(identifiers)
            raise ConflictError(self.store.refused_type(conn, key) or conflicts[0], key)
        return matched

    def _remember(self, conn: sqlite3.Connection, exc: ElementError) -> None:
        """Record a conflict after its element (or child) rolled back, so that it outlives the rollback."""
        if isinstance(exc, ConflictError):
            self.store.record_refusal(conn, exc.key, exc.id_type)

    def _upsert(self, conn: sqlite3.Connection, identifiers: list[tuple[str, str, Any]], profiles: list,
                principal: str, *, loyalty_type: str | None, extended_fields: dict, enrollments: list | None,
                referral_code: str | None, update_profile: bool) -> tuple[int, bool]:
        """Register the customer if no identifier is known, else update it; return (id, new)."""
        customer_id = self._match(conn, identifiers)
        stamp = now_iso()
        stored_profiles = [p.to_api() for p in profiles]
        for p in stored_profiles:
            p.pop("identifiers", None)
        if customer_id is None:
            customer_id = self.store.next_customer_id(conn)
            conn.execute(
                "INSERT INTO customers(id, loyalty_type, profile, enrollments, extended_fields, referral_code,"
                " created_at, modified_at, created_by, modified_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (customer_id, loyalty_type or "loyalty", dumps(stored_profiles), dumps(enrollments or []),
                 dumps(extended_fields or {}), referral_code, stamp, stamp, principal, principal))
            is_new = True
        else:
            is_new = False
            if update_profile:
                row = self.store.customer(conn, customer_id)
                merged_profiles = {p.get("source"): p for p in json.loads(row["profile"])}
                merged_profiles.update({p.get("source"): p for p in stored_profiles})
                fields = json.loads(row["extended_fields"])
                fields.update(extended_fields or {})
                conn.execute(
                    "UPDATE customers SET loyalty_type=?, profile=?, enrollments=?, extended_fields=?,"
                    " referral_code=COALESCE(?, referral_code), modified_at=?, modified_by=? WHERE id=?",
                    (loyalty_type or row["loyalty_type"], dumps(list(merged_profiles.values())),
                     dumps(enrollments) if enrollments else row["enrollments"], dumps(fields), referral_code,
                     stamp, principal, customer_id))
        if is_new or update_profile:
            conn.executemany(
                "INSERT OR IGNORE INTO identifiers(type, value, customer_id, extra) VALUES (?, ?, ?, ?)",
                [(t, v, customer_id, dumps(extra) if extra else None) for t, v, extra in identifiers])
        return customer_id, is_new

    def _upsert_ref(self, conn: sqlite3.Connection, ref: CustomerRef, principal: str) -> tuple[int, bool, list]:
        """A parent or child given by its profiles: registered if missing, otherwise left as stored."""
        check_registration_dates(ref.profiles)
        resolved = resolve_identifiers(ref.profiles, "loyalty")
        customer_id, is_new = self._upsert(conn, resolved.identifiers, ref.profiles, principal, loyalty_type=None,
                                           extended_fields=accepted_extended_fields(ref.extendedFields,
                                                                                    resolved.warnings),
                                           enrollments=None,
                                           referral_code=None, update_profile=False)
        return customer_id, is_new, resolved.warnings

    def _ancestors(self, conn: sqlite3.Connection, customer_id: int) -> set[int]:
        seen: set[int] = set()
        current = self.store.customer(conn, customer_id)
        while current is not None and current["parent_id"] is not None and current["parent_id"] not in seen:
            seen.add(current["parent_id"])
            current = self.store.customer(conn, current["parent_id"])
        return seen

    def _associate(self, conn: sqlite3.Connection, customer_id: int, ad: AssociationDetails,
                   principal: str) -> tuple[dict, dict]:
        """Apply the main customer's associationDetails, checking every rule of the hierarchy."""
        hierarchy = self.store.hierarchy_by_code(conn, ad.hierarchyCode)
        if hierarchy is None:
            raise ElementError(AssociationCodes.HIERARCHY_NOT_FOUND, f"Hierarchy {ad.hierarchyCode!r} not found")
        role = role_of(hierarchy, ad.roleCode)
        if role is None:
            raise ElementError(AssociationCodes.ROLE_NOT_IN_HIERARCHY,
                               f"Role {ad.roleCode!r} is not a role of hierarchy {ad.hierarchyCode!r}")
        row = self.store.customer(conn, customer_id)
        same_place = row["hierarchy_id"] == hierarchy["id"]
        company_id = row["company_id"] if same_place else None
        if ad.fleetCompany is not None:
            company = self.store.company_by_external_id(conn, ad.fleetCompany.externalId)
            if company is None:
                raise ElementError(AssociationCodes.COMPANY_NOT_FOUND,
                                   f"Fleet company {ad.fleetCompany.externalId!r} not found")
            if company["hierarchy_code"] != hierarchy["code"]:
                raise ElementError(AssociationCodes.COMPANY_OTHER_HIERARCHY,
                                   f"Fleet company {ad.fleetCompany.externalId!r} belongs to hierarchy "
                                   f"{company['hierarchy_code']!r}, not {hierarchy['code']!r}")
            company_id = company["id"]
        parent_id = row["parent_id"] if same_place else None
        if ad.parentCustomer is not None:
            parent_id, parent_new, _ = self._upsert_ref(conn, ad.parentCustomer, principal)
            if parent_id == customer_id or customer_id in self._ancestors(conn, parent_id):
                raise ElementError(AssociationCodes.HIERARCHY_CYCLE, "A customer cannot be its own ancestor")
            parent = self.store.customer(conn, parent_id)
            parent_role = role_of(hierarchy, parent["role_code"]) if parent["hierarchy_id"] == hierarchy["id"] else None
            if parent_new or parent_role is None:
                raise ElementError(AssociationCodes.PARENT_NOT_ASSOCIATED,
                                   f"Parent customer has no role in hierarchy {hierarchy['code']!r}")
            if not _role_fits(hierarchy, parent_role, role["code"]):
                raise ElementError(AssociationCodes.PARENT_ROLE_MISMATCH,
                                   f"A parent with role {parent_role['code']!r} takes children of role "
                                   f"{parent_role.get('childRoleCode')!r}, not {role['code']!r}")
            self._check_room(conn, parent_id, parent_role, customer_id)
        elif parent_id is not None:
            # The stored parent stays only while the (possibly new) role still fits under it.
            parent = self.store.customer(conn, parent_id)
            parent_role = role_of(hierarchy, parent["role_code"]) if parent is not None else None
            if parent_role is None or not _role_fits(hierarchy, parent_role, role["code"]):
                parent_id = None
        conn.execute("UPDATE customers SET hierarchy_id=?, role_code=?, company_id=?, parent_id=? WHERE id=?",
                     (hierarchy["id"], role["code"], company_id, parent_id, customer_id))
        return hierarchy, role

    def _check_room(self, conn: sqlite3.Connection, parent_id: int, parent_role: dict, child_id: int) -> None:
        max_child = parent_role.get("maxChild")
        if max_child is not None and self.store.child_count(conn, parent_id, excluding=child_id) >= max_child:
            raise ElementError(AssociationCodes.MAX_CHILD_EXCEEDED,
                               f"Parent already has the maximum of {max_child} children for role {parent_role['code']!r}")

    def _child(self, conn: sqlite3.Connection, parent_id: int, hierarchy: dict, parent_role: dict,
               child_role_code: str | None, ref: CustomerRef, principal: str) -> dict:
        """Register and attach one of ``childCustomers``; its failure fails only this child."""
        try:
            with self.store.transaction():
                if child_role_code is None:
                    raise ElementError(AssociationCodes.PARENT_ROLE_MISMATCH,
                                       f"Role {parent_role['code']!r} takes no children")
                if role_of(hierarchy, child_role_code) is None:
                    raise ElementError(AssociationCodes.ROLE_NOT_IN_HIERARCHY,
                                       f"Role {child_role_code!r} is not a role of hierarchy {hierarchy['code']!r}")
                if not _role_fits(hierarchy, parent_role, child_role_code):
                    raise ElementError(AssociationCodes.PARENT_ROLE_MISMATCH,
                                       f"A parent with role {parent_role['code']!r} takes children of role "
                                       f"{parent_role.get('childRoleCode')!r}, not {child_role_code!r}")
                child_id, is_new, warnings = self._upsert_ref(conn, ref, principal)
                if child_id == parent_id or child_id in self._ancestors(conn, parent_id):
                    raise ElementError(AssociationCodes.HIERARCHY_CYCLE, "A customer cannot be its own ancestor")
                self._check_room(conn, parent_id, parent_role, child_id)
                company_id = self.store.customer(conn, parent_id)["company_id"]
                conn.execute("UPDATE customers SET hierarchy_id=?, role_code=?, company_id=?, parent_id=? WHERE id=?",
                             (hierarchy["id"], child_role_code, company_id, parent_id, child_id))
                return customer_entity(self.store, conn, child_id, new=is_new, child=True, warnings=warnings)
        except ElementError as exc:
            self._remember(conn, exc)
            return {"id": None, "profiles": [p.to_api() for p in ref.profiles], "associationDetails": None,
                    "extendedFields": ref.extendedFields, "warnings": [], "errors": [exc.as_message()]}

    # --- reading ----------------------------------------------------------------------

    def lookup(self, id_type: str, value: str) -> int | None:
        """The id of the customer holding an identifier."""
        stored = normalize(id_type, value)
        if stored is None:
            return None
        with self.store.reading() as conn:
            return self.store.owner_of(conn, id_type, stored)

    def details(self, customer_id: int) -> dict:
        """The full stored customer."""
        with self.store.reading() as conn:
            return customer_entity(self.store, conn, customer_id)
