"""Column contract of the warehouse (docs/warehouse.md): what we read and what we write."""

from __future__ import annotations

COMPANY_COLUMNS = (
    "company_external_id",
    "company_name",
    "hierarchy_code",
    "parent_company_external_id",
    "extended_fields",
    "updated_at",
)

# Read when the extract returns it (the incremental SQL does): how many children a
# customer has in the whole table, for maxChild checks on a partial extract.
CUSTOMER_CHILD_COUNT = "child_count"

# Optional (not in the contract): the customer's app push token (e.g. an FCM token). With
# it, the payload carries a ``mobilePush`` channel, and ``last_viewed_date`` in its meta;
# without it, ``last_viewed_date`` is not sent (the channel needs a value).
CUSTOMER_PUSH_TOKEN = "push_token"

CUSTOMER_COLUMNS = (
    "customer_key",
    "first_name",
    "last_name",
    "mobile",
    "email",
    "external_id",
    "card_number",
    "card_series_code",
    "card_status_label",
    "loyalty_type",
    "company_external_id",
    "role_code",
    "parent_customer_key",
    "program_id",
    "tier_number",
    "loyalty_points",
    "tier_expiry_date",
    "points_expiry_date",
    "registered_at",
    "last_viewed_date",
    "till_code",
    "source",
    "account_id",
    "extended_fields",
    "custom_fields",
    "updated_at",
)

# Output tables: name -> columns, in order. More columns may be added, never removed.
QUARANTINE_TABLE = "associate_quarantine"
RESULTS_TABLE = "associate_sync_results"
WARNINGS_TABLE = "associate_warnings"
STATE_TABLE = "associate_sync_state"

OUTPUT_TABLES: dict[str, tuple[str, ...]] = {
    QUARANTINE_TABLE: (
        "run_id", "entity", "entity_key", "check", "column_name", "reason", "quarantined_at",
    ),
    RESULTS_TABLE: (
        "run_id", "entity", "entity_key", "status", "capillary_id", "error_code",
        "error_message", "attempts", "synced_at",
    ),
    WARNINGS_TABLE: ("run_id", "entity", "entity_key", "capillary_id", "code", "message"),
    STATE_TABLE: (
        "entity", "entity_key", "payload_hash", "capillary_id", "last_status", "last_run_id",
        "last_synced_at", "hierarchy_code", "role_code", "company_external_id",
    ),
}

# The association of a customer's last successful send (sync-state columns). Older
# state tables lack them: ``ensure_output_tables`` adds them, and a null means unknown.
STATE_ASSOCIATION = ("hierarchy_code", "role_code", "company_external_id")

ENTITY_CUSTOMER = "customer"
ENTITY_COMPANY = "company"
STATUS_SUCCESS = "success"
STATUS_WARNING = "warning"
STATUS_FAILED = "failed"

# Documented bulk element codes of an association that cannot move (customers.md):
# already mapped to another hierarchy, fleet user role / fleet company can't be changed.
CODE_HIERARCHY_CHANGE, CODE_ROLE_CHANGE, CODE_COMPANY_CHANGE = 1626, 1627, 1628

# HTTP methods of the bulk call: register (POST) or update (PUT).
METHOD_REGISTER, METHOD_UPDATE = "POST", "PUT"
# Profile source when the warehouse gives none (also the bulk call's ``source`` query).
DEFAULT_SOURCE = "INSTORE"
