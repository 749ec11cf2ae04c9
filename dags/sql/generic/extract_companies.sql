{#- Fleet companies to sync. Must yield the columns of the `fleet_companies` contract.
    Incremental: changed companies, the companies of every customer in scope (see
    _scope.sql) and all their holding companies up the chain. -#}
{% if not full %}
WITH RECURSIVE
{% include '_scope.sql' %},
company_seed AS (
    SELECT company_external_id FROM changed_companies
    UNION
    SELECT c.company_external_id FROM customers c
    WHERE c.company_external_id IS NOT NULL
      AND c.customer_key IN (SELECT customer_key FROM scope_customers)
),
holding (company_external_id, parent_company_external_id) AS (
    SELECT f.company_external_id, f.parent_company_external_id FROM fleet_companies f
    WHERE f.company_external_id IN (SELECT company_external_id FROM company_seed)
    UNION
    SELECT p.company_external_id, p.parent_company_external_id
    FROM fleet_companies p JOIN holding h ON p.company_external_id = h.parent_company_external_id
)
{% endif %}
SELECT
    f.company_external_id, f.company_name, f.hierarchy_code, f.parent_company_external_id,
    f.extended_fields, f.updated_at
FROM fleet_companies f
{% if not full %}
WHERE f.company_external_id IN (SELECT company_external_id FROM holding)
{% endif %}
