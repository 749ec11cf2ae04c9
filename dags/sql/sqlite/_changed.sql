{#- changed(col) on SQLite: timestamps are text (ISO-8601 with 'T' or ' ', 'Z' or an offset)
    or unix epoch seconds (as numbers, or as digits in a TEXT column). julianday() reads all
    of them as one UTC instant, which compares correctly (a plain text comparison would not:
    offsets, 'T' vs ' '), and costs a fifth of strftime() on a million-row scan. -#}
{% macro ts(col) -%}
CASE WHEN typeof({{ col }}) IN ('integer', 'real') OR {{ col }} NOT GLOB '*[^0-9.]*'
     THEN julianday({{ col }}, 'unixepoch')
     ELSE julianday({{ col }}) END
{%- endmacro %}
{% macro changed(col) -%}
({{ ts(col) }} >= julianday('{{ data_interval_start }}')
 AND {{ ts(col) }} < julianday('{{ data_interval_end }}'))
{%- endmacro %}
