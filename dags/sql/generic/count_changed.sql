{#- How much of the table an incremental run would start from: customers changed in
    [start, end) plus the customers of companies changed in it (a row counted twice only
    makes the estimate larger), and all customers. When the share is large, one full
    read is cheaper than the incremental scope's recursive joins (see warehouse.md). -#}
{% from '_changed.sql' import changed with context -%}
SELECT
    (SELECT COUNT(*) FROM customers WHERE {{ changed('updated_at') }})
    + (SELECT COUNT(*) FROM customers
       WHERE company_external_id IN (
           SELECT company_external_id FROM fleet_companies WHERE {{ changed('updated_at') }}))
        AS changed_customers,
    (SELECT COUNT(*) FROM customers) AS all_customers
