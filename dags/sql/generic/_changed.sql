{#- changed(col): the row's timestamp column is inside [data_interval_start, data_interval_end).
    Generic ANSI form (Snowflake, Redshift, ...): cast both sides to TIMESTAMP. -#}
{% macro changed(col) -%}
(CAST({{ col }} AS TIMESTAMP) >= CAST('{{ data_interval_start }}' AS TIMESTAMP)
 AND CAST({{ col }} AS TIMESTAMP) < CAST('{{ data_interval_end }}' AS TIMESTAMP))
{%- endmacro %}
