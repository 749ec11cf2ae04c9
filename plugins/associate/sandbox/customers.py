"""Customers: registration, matching by identifiers and association (their JSON form is ``entities``)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .entities import customer_entity, failed_entry, ref_form, role_of
from .models import AssociationDetails, Codes, CustomerElement, CustomerRef
from .rules import (ConflictError, ElementError, accepted_extended_fields, check_registration_dates,
                    match_priority, normalize, refusal_key, resolve_identifiers)
from .store import Store, dumps, now_iso


def _role_fits(hierarchy: dict, parent_role: dict, child_role_code: str) -> bool:
    """A child's role must be its parent's childRoleCode, unless skipping levels is allowed."""
    if parent_role.get("childRoleCode") == child_role_code:
        return True
    return bool(hierarchy.get("skipRoleAllowed")) and role_of(hierarchy, child_role_code) is not None


def _parent_role_for(hierarchy: dict, child_role_code: str) -> dict | None:
    """The role whose children take ``child_role_code``: the role a newly registered parent gets."""
    return next((r for r in hierarchy["roles"] if r.get("childRoleCode") == child_role_code), None)


def _check_fixed(row: sqlite3.Row, hierarchy: dict, role_code: str) -> None:
    """Hierarchy and role of an associated customer cannot move (1626, 1627)."""
    if row["hierarchy_id"] is not None and row["hierarchy_id"] != hierarchy["id"]:
        raise ElementError(Codes.OTHER_HIERARCHY, "Customer is already mapped to a different hierarchy")
    if row["role_code"] is not None and row["role_code"] != role_code:
        raise ElementError(Codes.ROLE_FIXED, f"Customer fleet user role can't be changed "
                                             f"({row['role_code']} -> {role_code})")


def _check_company(row: sqlite3.Row, company_id: int | None) -> None:
    """The company of an associated customer cannot move (1628)."""
    if company_id is not None and row["company_id"] is not None and row["company_id"] != company_id:
        raise ElementError(Codes.COMPANY_FIXED, "Customer fleet company can't be changed")


def _check_cycle(store: Store, conn: sqlite3.Connection, parent_id: int, child_id: int) -> None:
    """A customer cannot become its own ancestor (1608)."""
    seen: set[int] = set()
    current = store.customer(conn, parent_id)
    while current is not None and current["id"] not in seen:
        if current["id"] == child_id:
            raise ElementError(Codes.CYCLIC_HIERARCHY, "Cyclic hierarchy is not supported")
        seen.add(current["id"])
        current = store.customer(conn, current["parent_id"]) if current["parent_id"] is not None else None


def _hierarchy(store: Store, conn: sqlite3.Connection, code: str) -> dict:
    """The active hierarchy with this code (1610 inactive, 1616 unknown)."""
    hierarchy = store.hierarchy_by_code(conn, code)
    if hierarchy is not None:
        return hierarchy
    if store.hierarchy_inactive(conn, code):
        raise ElementError(Codes.HIERARCHY_NOT_ACTIVE, "Fleet hierarchy is not active")
    raise ElementError(Codes.HIERARCHY_CODE_INVALID, f"Fleet hierarchy code invalid {code}")


def _company(store: Store, conn: sqlite3.Connection, external_id: str, hierarchy: dict) -> int:
    """The id of an active company of this hierarchy (1704 unknown, 1705 inactive)."""
    company = store.company_by_external_id(conn, external_id)
    if company is None:
        raise ElementError(Codes.COMPANY_NOT_FOUND, f"Company does not exist with given ID/externalID {external_id}")
    if not company["is_active"]:
        raise ElementError(Codes.COMPANY_INACTIVE, "Fleet company is inactive")
    if company["hierarchy_code"] != hierarchy["code"]:
        # Assumption: the reference has no code for a company of another hierarchy.
        raise ElementError(Codes.HIERARCHY_CODE_INVALID,
                           f"Fleet hierarchy code invalid {hierarchy['code']}: company {external_id} belongs "
                           f"to hierarchy {company['hierarchy_code']}")
    return company["id"]


def _check_room(store: Store, conn: sqlite3.Connection, parent_id: int, parent_role: dict, child_id: int) -> None:
    """A parent has at most its role's maxChild children (1618); a re-sent child does not count twice."""
    max_child = parent_role.get("maxChild")
    if max_child is not None and store.child_count(conn, parent_id, excluding=child_id) >= max_child:
        raise ElementError(Codes.TOO_MANY_CHILDREN,
                           f"Total number of child for the role {parent_role['code']} can not exceed {max_child}")


def _named(elements: list[CustomerElement]) -> tuple[set[tuple[str, str]], set[str]]:
    """The stored forms of the identifiers a batch names (its customers, parents and children), and its companies."""
    identifiers, companies = set(), set()
    for element in elements:
        profiles = list(element.profiles)
        ad = element.associationDetails
        if ad is not None:
            if ad.fleetCompany is not None:
                companies.add(ad.fleetCompany.externalId)
            for ref in ([ad.parentCustomer] if ad.parentCustomer else []) + ad.childCustomers:
                profiles += ref.profiles
        for profile in profiles:
            for ident in profile.identifiers:
                value = normalize(ident.type, ident.value)
                if value is not None:
                    identifiers.add((ident.type, value))
    return identifiers, companies


class CustomerService:
    """The bulk calls (POST registers, PUT updates) and the lookups, on top of the Store."""

    def __init__(self, store: Store):
        self.store = store

    # --- bulk -------------------------------------------------------------------------

    def bulk(self, elements: list[CustomerElement], principal: str, *, update: bool = False,
             source: str | None = None, account_id: str | None = None) -> list[dict]:
        """Process a validated batch in one transaction; each element is atomic on its own.

        ``update`` is the PUT call: it changes details of registered customers only. ``source`` and
        ``account_id`` (the query) are the source and account of profiles that name none.
        """
        for element in elements:
            ad = element.associationDetails
            refs = ([ad.parentCustomer] if ad and ad.parentCustomer else []) + (ad.childCustomers if ad else [])
            for profile in element.profiles + [p for ref in refs for p in ref.profiles]:
                profile.source = profile.source or source or "INSTORE"
                profile.accountId = profile.accountId or account_id
        results = []
        with self.store.memoised() as conn:
            self.store.prefetch(conn, *_named(elements))
            for element in elements:
                try:
                    with self.store.transaction():
                        results.append(self._element(conn, element, principal, update))
                except ElementError as exc:
                    self._remember(conn, exc)
                    results.append({"entity": None, "childEntities": [], "childCount": 0, "childSuccessCount": 0,
                                    "childFailureCount": 0, "errors": [exc.as_message()], "warnings": []})
        return results

    def _element(self, conn: sqlite3.Connection, element: CustomerElement, principal: str, update: bool) -> dict:
        check_registration_dates(element.profiles)
        resolved = resolve_identifiers(element.profiles, element.loyaltyInfo.loyaltyType)
        customer_id = self._match(conn, resolved.identifiers)
        if update and customer_id is None:
            raise ElementError(Codes.CUSTOMER_NOT_FOUND, "No customer found with the given identifiers")
        is_new = customer_id is None
        if is_new or update:
            # Registration does not change a registered customer's details; the update call does.
            customer_id = self._store_details(
                conn, customer_id, resolved.identifiers, element.profiles, principal,
                loyalty_type=element.loyaltyInfo.loyaltyType,
                extended_fields=accepted_extended_fields(element.extendedFields, resolved.warnings),
                enrollments=[e.to_api() for e in element.loyaltyProgramEnrollments],
                referral_code=element.referralCode)
        else:
            # Details stay; identifiers the customer does not hold yet are added (as registering an
            # identifier on another source adds it to the existing customer, per the reference).
            self._add_identifiers(conn, customer_id, resolved.identifiers)
        children: list[dict] = []
        ad = element.associationDetails
        child_role_code, parent_form = None, None
        if ad is not None:
            hierarchy, role = self._associate(conn, customer_id, ad, principal)
            child_role_code = ad.childRoleCode or role.get("childRoleCode")
            for ref in ad.childCustomers:
                children.append(self._child(conn, customer_id, hierarchy, role, child_role_code, ref, principal))
            if ad.parentCustomer is not None:
                parent_form = ref_form(self.store, conn, self.store.customer(conn, customer_id)["parent_id"])
        entity = customer_entity(self.store, conn, customer_id, new=is_new, child=False, warnings=resolved.warnings,
                                 child_role_code=child_role_code,
                                 child_customers=[ref_form(self.store, conn, c["id"]) for c in children if c.get("id")]
                                 if ad is not None and ad.childCustomers else None,
                                 parent_customer=parent_form)
        failed = sum(1 for c in children if c.get("errors"))
        result = {"entity": entity, "childEntities": children, "childCount": len(children),
                  "childSuccessCount": len(children) - failed, "childFailureCount": failed,
                  "errors": [], "warnings": []}
        if update:
            # The reference's PUT sample answers the customer's fields at the element's top level.
            result = {**{k: v for k, v in entity.items() if k != "warnings"}, **result}
        return result

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

    def _store_details(self, conn: sqlite3.Connection, customer_id: int | None,
                       identifiers: list[tuple[str, str, Any]], profiles: list, principal: str, *,
                       loyalty_type: str | None, extended_fields: dict, enrollments: list | None,
                       referral_code: str | None) -> int:
        """Register a customer (``customer_id`` None) or update a registered one's details; its id."""
        stamp = now_iso()
        stored_profiles = [p.to_api() for p in profiles]
        for p in stored_profiles:
            p.pop("identifiers", None)
        new = customer_id is None
        if new:
            customer_id = self.store.next_customer_id(conn)
            self.store.insert_customer(conn, {
                "id": customer_id, "loyalty_type": loyalty_type or "loyalty", "profile": dumps(stored_profiles),
                "enrollments": dumps(enrollments or []), "extended_fields": dumps(extended_fields or {}),
                "referral_code": referral_code, "created_at": stamp, "modified_at": stamp,
                "created_by": principal, "modified_by": principal})
        else:
            row = self.store.customer(conn, customer_id)
            merged_profiles = {p.get("source"): p for p in json.loads(row["profile"])}
            merged_profiles.update({p.get("source"): p for p in stored_profiles})
            fields = json.loads(row["extended_fields"])
            fields.update(extended_fields or {})
            self.store.update_customer(
                conn, customer_id, loyalty_type=loyalty_type or row["loyalty_type"],
                profile=dumps(list(merged_profiles.values())),
                enrollments=dumps(enrollments) if enrollments else row["enrollments"], extended_fields=dumps(fields),
                referral_code=referral_code if referral_code is not None else row["referral_code"],
                modified_at=stamp, modified_by=principal)
        self._add_identifiers(conn, customer_id, identifiers, new=new)
        return customer_id

    def _add_identifiers(self, conn: sqlite3.Connection, customer_id: int,
                         identifiers: list[tuple[str, str, Any]], *, new: bool = False) -> None:
        self.store.add_identifiers(conn, customer_id, identifiers, new=new)

    def _upsert_ref(self, conn: sqlite3.Connection, ref: CustomerRef, principal: str) -> tuple[int, bool, list]:
        """A parent or child given by its profiles: registered if missing, otherwise left as stored."""
        check_registration_dates(ref.profiles)
        resolved = resolve_identifiers(ref.profiles, "loyalty")
        customer_id = self._match(conn, resolved.identifiers)
        if customer_id is not None:
            return customer_id, False, resolved.warnings
        customer_id = self._store_details(
            conn, None, resolved.identifiers, ref.profiles, principal, loyalty_type=None,
            extended_fields=accepted_extended_fields(ref.extendedFields, resolved.warnings), enrollments=None,
            referral_code=None)
        return customer_id, True, resolved.warnings

    def _associate(self, conn: sqlite3.Connection, customer_id: int, ad: AssociationDetails,
                   principal: str) -> tuple[dict, dict]:
        """Apply the main customer's associationDetails, checking every rule of the hierarchy."""
        hierarchy = _hierarchy(self.store, conn, ad.hierarchyCode)
        role = role_of(hierarchy, ad.roleCode)
        if role is None:
            raise ElementError(Codes.ROLE_CODE_INVALID, f"Role Code {ad.roleCode} is invalid")
        row = self.store.customer(conn, customer_id)
        _check_fixed(row, hierarchy, role["code"])
        company_id = _company(self.store, conn, ad.fleetCompany.externalId, hierarchy) if ad.fleetCompany else None
        _check_company(row, company_id)
        company_id = company_id if company_id is not None else row["company_id"]
        parent_id = row["parent_id"]
        if ad.parentCustomer is not None:
            parent_id = self._parent(conn, customer_id, ad.parentCustomer, hierarchy, role, company_id, principal)
        self.store.update_customer(conn, customer_id, hierarchy_id=hierarchy["id"], role_code=role["code"],
                                   company_id=company_id, parent_id=parent_id)
        return hierarchy, role

    def _parent(self, conn: sqlite3.Connection, child_id: int, ref: CustomerRef, hierarchy: dict, child_role: dict,
                company_id: int | None, principal: str) -> int:
        """The parent named by ``parentCustomer``: registered and mapped if it is not yet; its id."""
        parent_id, _, _ = self._upsert_ref(conn, ref, principal)
        _check_cycle(self.store, conn, parent_id, child_id)
        parent = self.store.customer(conn, parent_id)
        if parent["hierarchy_id"] is None:
            # Register-if-missing: the parent takes the role above the child's, and the child's company.
            parent_role = _parent_role_for(hierarchy, child_role["code"])
            if parent_role is None:  # e.g. the top role: no role takes it as child, so no parent fits
                raise ElementError(Codes.PARENT_NOT_MAPPED,
                                   f"Fleet parent customer {parent_id} not mapped in the hierarchy: role "
                                   f"{child_role['code']} is no role's child role")
            self.store.update_customer(conn, parent_id, hierarchy_id=hierarchy["id"], role_code=parent_role["code"],
                                       company_id=company_id)
        else:
            parent_role = role_of(hierarchy, parent["role_code"]) if parent["hierarchy_id"] == hierarchy["id"] else None
            if parent_role is None:
                raise ElementError(Codes.PARENT_NOT_MAPPED,
                                   f"Fleet parent customer {parent_id} not mapped in the hierarchy")
            if not _role_fits(hierarchy, parent_role, child_role["code"]):
                raise ElementError(Codes.CHILD_ROLE_NOT_QUALIFIED,
                                   f"Fleet role code {child_role['code']} doesn't qualify the hierarchy under "
                                   f"a parent of role {parent_role['code']}")
        _check_room(self.store, conn, parent_id, parent_role, child_id)
        return parent_id

    def _child(self, conn: sqlite3.Connection, parent_id: int, hierarchy: dict, parent_role: dict,
               child_role_code: str | None, ref: CustomerRef, principal: str) -> dict:
        """Register and attach one of ``childCustomers``; its failure fails only this child."""
        try:
            with self.store.transaction():
                if child_role_code is None:
                    raise ElementError(Codes.CHILD_ROLE_NOT_QUALIFIED,
                                       f"Role {parent_role['code']} takes no child customers")
                if role_of(hierarchy, child_role_code) is None:
                    raise ElementError(Codes.ROLE_CODE_INVALID, f"Role Code {child_role_code} is invalid")
                if not _role_fits(hierarchy, parent_role, child_role_code):
                    raise ElementError(Codes.CHILD_ROLE_NOT_QUALIFIED,
                                       "Fleet role code for the child customers doesn't qualify the hierarchy")
                child_id, is_new, warnings = self._upsert_ref(conn, ref, principal)
                child = self.store.customer(conn, child_id)
                _check_fixed(child, hierarchy, child_role_code)
                company_id = self.store.customer(conn, parent_id)["company_id"]
                _check_company(child, company_id)
                _check_cycle(self.store, conn, parent_id, child_id)
                _check_room(self.store, conn, parent_id, parent_role, child_id)
                self.store.update_customer(conn, child_id, hierarchy_id=hierarchy["id"], role_code=child_role_code,
                                           company_id=company_id or child["company_id"], parent_id=parent_id)
                return customer_entity(self.store, conn, child_id, new=is_new, child=True, warnings=warnings)
        except ElementError as exc:
            self._remember(conn, exc)
            return failed_entry(ref, exc.as_message())

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
