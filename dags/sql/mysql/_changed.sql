{#- changed(col) on MySQL/MariaDB: DATETIME (taken as UTC), TIMESTAMP (read as UTC: the extract
    sets the session time zone) and ISO-8601 text with 'T' or ' ', 'Z' or an offset
    ('+05:30') all become one UTC DATETIME. Neither engine reads an offset in a CAST, so
    the offset is taken off and subtracted in minutes (CONVERT_TZ would leave values past
    2038 unconverted). Unix epoch numbers are not read here. A DATETIME column is then
    compared through an expression: an index on it is not used (a full scan of a million
    rows takes about a second); a warehouse whose columns are all DATETIME can put a plain
    `col >= ... AND col < ...` form in its own mysql/_changed.sql. -#}
{% macro ts(col) -%}
CASE
    WHEN {{ col }} LIKE '%Z' THEN CAST(LEFT({{ col }}, CHAR_LENGTH({{ col }}) - 1) AS DATETIME(6))
    WHEN {{ col }} LIKE '%+__:__' OR {{ col }} LIKE '%-__:__' THEN TIMESTAMPADD(MINUTE,
        (CASE WHEN SUBSTRING({{ col }}, -6, 1) = '-' THEN 1 ELSE -1 END)
        * (CAST(SUBSTRING({{ col }}, -5, 2) AS SIGNED) * 60 + CAST(SUBSTRING({{ col }}, -2, 2) AS SIGNED)),
        CAST(LEFT({{ col }}, CHAR_LENGTH({{ col }}) - 6) AS DATETIME(6)))
    ELSE CAST({{ col }} AS DATETIME(6))
END
{%- endmacro %}
{% macro changed(col) -%}
({{ ts(col) }} >= {{ ts("'" ~ data_interval_start ~ "'") }}
 AND {{ ts(col) }} < {{ ts("'" ~ data_interval_end ~ "'") }})
{%- endmacro %}
