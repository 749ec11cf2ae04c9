{#- The customers an incremental run covers, as CTEs (after WITH RECURSIVE):
    customers changed in [start, end) and the customers of companies changed in it,
    plus their ancestors (validation checks the parent chain) and their descendants (a
    child's payload embeds its parent's identifiers). The other children of an ancestor
    are not read: validation needs only how many there are, which extract_customers.sql
    returns as child_count.
    How a timestamp column is compared with the interval is dialect-specific: see
    _changed.sql in the dialect folder. -#}
{% from '_changed.sql' import changed with context -%}
changed_companies AS (
    SELECT company_external_id FROM fleet_companies
    WHERE {{ changed('updated_at') }}
),
seed_customers AS (
    -- Two selects, not one OR: each can then use its own index (updated_at, company).
    SELECT customer_key FROM customers
    WHERE {{ changed('updated_at') }}
    UNION
    SELECT customer_key FROM customers
    WHERE company_external_id IN (SELECT company_external_id FROM changed_companies)
),
ancestors (customer_key, parent_customer_key) AS (
    SELECT c.customer_key, c.parent_customer_key FROM customers c
    WHERE c.customer_key IN (SELECT customer_key FROM seed_customers)
    UNION
    SELECT p.customer_key, p.parent_customer_key
    FROM customers p JOIN ancestors a ON p.customer_key = a.parent_customer_key
),
descendants (customer_key) AS (
    SELECT customer_key FROM seed_customers
    UNION
    SELECT c.customer_key
    FROM customers c JOIN descendants d ON c.parent_customer_key = d.customer_key
),
scope_customers AS (
    SELECT customer_key FROM ancestors
    UNION
    SELECT customer_key FROM descendants
)
