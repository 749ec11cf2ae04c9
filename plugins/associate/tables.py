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
        "last_synced_at",
    ),
}

ENTITY_CUSTOMER = "customer"
ENTITY_COMPANY = "company"
STATUS_SUCCESS = "success"
STATUS_WARNING = "warning"
STATUS_FAILED = "failed"
