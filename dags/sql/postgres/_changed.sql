{#- changed(col) on PostgreSQL: timestamptz, timestamp (read as UTC: the extract sets the session time zone) and
    ISO-8601 text with 'T'/' ', 'Z' or offsets all cast to timestamptz. -#}
{% macro changed(col) -%}
(CAST({{ col }} AS timestamptz) >= CAST('{{ data_interval_start }}' AS timestamptz)
 AND CAST({{ col }} AS timestamptz) < CAST('{{ data_interval_end }}' AS timestamptz))
{%- endmacro %}
