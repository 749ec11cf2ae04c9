{#- changed(col) on SQLite: timestamps are text (ISO-8601 with 'T' or ' ', 'Z' or an offset)
    or unix epoch seconds (as numbers, or as digits in a TEXT column). strftime normalises
    all of them to UTC text with milliseconds, which compares correctly as text (a plain
    text comparison would not: offsets, 'T' vs ' '). -#}
{% macro ts(col) -%}
CASE WHEN typeof({{ col }}) IN ('integer', 'real') OR {{ col }} NOT GLOB '*[^0-9.]*'
     THEN strftime('%Y-%m-%d %H:%M:%f', {{ col }}, 'unixepoch')
     ELSE strftime('%Y-%m-%d %H:%M:%f', {{ col }}) END
{%- endmacro %}
{% macro changed(col) -%}
({{ ts(col) }} >= strftime('%Y-%m-%d %H:%M:%f', '{{ data_interval_start }}')
 AND {{ ts(col) }} < strftime('%Y-%m-%d %H:%M:%f', '{{ data_interval_end }}'))
{%- endmacro %}
