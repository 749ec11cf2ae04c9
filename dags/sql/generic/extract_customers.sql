{#- Customers to sync. Must yield the columns of the `customers` contract (warehouse.md);
    extra columns are ignored. Variables: mode ('full' | 'incremental'), full (bool),
    data_interval_start / data_interval_end (ISO-8601 UTC text, Airflow's own timestamps).
    Incremental scope (which customers) lives in _scope.sql of the dialect folder. -#}
{% if not full %}
WITH RECURSIVE
{% include '_scope.sql' %}
{% endif %}
SELECT
    c.customer_key, c.first_name, c.last_name, c.mobile, c.email, c.external_id,
    c.card_number, c.card_series_code, c.card_status_label, c.loyalty_type,
    c.company_external_id, c.role_code, c.parent_customer_key,
    c.program_id, c.tier_number, c.loyalty_points, c.tier_expiry_date, c.points_expiry_date,
    c.registered_at, c.last_viewed_date, c.till_code, c.source, c.account_id,
    c.extended_fields, c.custom_fields, c.updated_at
FROM customers c
{% if not full %}
WHERE c.customer_key IN (SELECT customer_key FROM scope_customers)
{% endif %}
