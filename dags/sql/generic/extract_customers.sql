{#- Customers to sync. Must yield the columns of the `customers` contract (warehouse.md);
    extra columns are ignored. Variables: mode ('full' | 'incremental'), full (bool),
    data_interval_start / data_interval_end (ISO-8601 UTC text, Airflow's own timestamps).
    Incremental scope (which customers) lives in _scope.sql of the dialect folder.
    An incremental extract adds child_count: how many children each customer has in the
    whole table (validation checks it against maxChild without reading the siblings). -#}
{% if not full %}
WITH RECURSIVE
{% include '_scope.sql' %},
scope_children AS (
    SELECT k.parent_customer_key, COUNT(*) AS child_count
    FROM customers k
    WHERE k.parent_customer_key IN (SELECT customer_key FROM scope_customers)
    GROUP BY k.parent_customer_key
)
{% endif %}
SELECT
    c.customer_key, c.first_name, c.last_name, c.mobile, c.email, c.external_id,
    c.card_number, c.card_series_code, c.card_status_label, c.loyalty_type,
    c.company_external_id, c.role_code, c.parent_customer_key,
    c.program_id, c.tier_number, c.loyalty_points, c.tier_expiry_date, c.points_expiry_date,
    c.registered_at, c.last_viewed_date, c.till_code, c.source, c.account_id,
    c.extended_fields, c.custom_fields, c.updated_at
{%- if not full %},
    COALESCE(n.child_count, 0) AS child_count
{%- endif %}
FROM customers c
{% if not full %}
LEFT JOIN scope_children n ON n.parent_customer_key = c.customer_key
WHERE c.customer_key IN (SELECT customer_key FROM scope_customers)
{% endif %}
