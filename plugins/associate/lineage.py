"""OpenLineage datasets of the pipeline: the warehouse tables it reads and writes, the Capillary APIs it sends to.

The openlineage provider asks an operator for ``get_openlineage_facets_on_start/complete``;
the operators answer with :func:`task_lineage`. Imported only when lineage is emitted: the
provider's modules are imported inside the functions.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from associate.tables import QUARANTINE_TABLE, RESULTS_TABLE, STATE_TABLE, WARNINGS_TABLE

# The tables the shipped extract SQL reads (dags/sql/<dialect>/extract_*.sql).
COMPANIES_SOURCE = "fleet_companies"
CUSTOMERS_SOURCE = "customers"
COMPANIES_API = "v2/companies"
CUSTOMERS_API = "v2/customers/bulk"


@dataclass(frozen=True)
class TaskDatasets:
    """What one task reads and writes: warehouse tables and Capillary API paths."""

    tables_in: tuple[str, ...] = ()
    tables_out: tuple[str, ...] = ()
    apis_out: tuple[str, ...] = ()


# Per task id; tasks not named here emit no datasets of their own.
TASKS: Mapping[str, TaskDatasets] = {
    "extract": TaskDatasets(tables_in=(COMPANIES_SOURCE, CUSTOMERS_SOURCE)),
    "validate": TaskDatasets(tables_in=(COMPANIES_SOURCE, CUSTOMERS_SOURCE), tables_out=(QUARANTINE_TABLE,)),
    # Both record results, warnings and sync state as answers come, so a killed run resumes
    # where it stopped; write_back writes what they did not record.
    "ensure_companies": TaskDatasets(tables_in=(COMPANIES_SOURCE,), tables_out=(RESULTS_TABLE, WARNINGS_TABLE, STATE_TABLE),
                                     apis_out=(COMPANIES_API,)),
    "post": TaskDatasets(tables_in=(CUSTOMERS_SOURCE,), tables_out=(RESULTS_TABLE, WARNINGS_TABLE, STATE_TABLE),
                         apis_out=(CUSTOMERS_API,)),
    "write_back": TaskDatasets(tables_out=(RESULTS_TABLE, WARNINGS_TABLE, STATE_TABLE)),
}


def task_lineage(task_id: str, *, warehouse_conn_id: str | None, capillary_conn_id: str | None):
    """The ``OperatorLineage`` of one task of the DAG (empty for a task without datasets)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    spec = TASKS.get(task_id)
    if spec is None:
        return OperatorLineage()
    inputs = [warehouse_dataset(warehouse_conn_id, table) for table in spec.tables_in if warehouse_conn_id]
    outputs = [warehouse_dataset(warehouse_conn_id, table) for table in spec.tables_out if warehouse_conn_id]
    outputs += [capillary_dataset(capillary_conn_id, path) for path in spec.apis_out if capillary_conn_id]
    return OperatorLineage(inputs=inputs, outputs=outputs)


def warehouse_dataset(conn_id: str, table: str):
    """A warehouse table as an OpenLineage dataset, named as the SQL provider names it."""
    from openlineage.client.event_v2 import Dataset

    namespace, prefix = warehouse_namespace(conn_id)
    return Dataset(namespace=namespace, name=".".join([*prefix, table]))


@functools.cache
def warehouse_namespace(conn_id: str) -> tuple[str, list[str]]:
    """(namespace, name prefix) of a warehouse connection, from its hook's OpenLineage database info.

    PostgreSQL and MySQL hooks give ``postgres://host:port`` and the database (and schema), as
    their SQL lineage names tables; SQLite has no OpenLineage naming of its own: ``sqlite://<file path>``.
    """
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    info, schema = _database_info(conn)
    if info is None:
        scheme = (conn.conn_type or "sql").lower()
        return f"{scheme}://{conn.host or ''}", ([conn.schema] if conn.schema and scheme != "sqlite" else [])
    from airflow.providers.openlineage.sqlparser import SQLParser

    prefix = [info.database, schema] if info.database else [schema or conn.schema]
    return SQLParser.create_namespace(info), [part for part in prefix if part]


def _database_info(conn) -> tuple[Any, str | None]:
    """The hook's ``DatabaseInfo`` and default schema; (None, None) when its provider has no OpenLineage support."""
    from associate.warehouse.dialect import db_hook

    try:
        hook = db_hook(conn.conn_id)
        info = hook.get_openlineage_database_info(conn)
    except Exception:  # lineage never fails a task: fall back to the connection's own fields
        return None, None
    if info is None:
        return None, None
    try:
        # PostgreSQL asks the server (current_schema): one query per task, as the provider's SQL lineage does.
        return info, hook.get_openlineage_default_schema()
    except Exception:
        return info, None


def capillary_dataset(conn_id: str, path: str):
    """A Capillary API resource as an OpenLineage dataset: namespace the cluster URL, name the API path."""
    from openlineage.client.event_v2 import Dataset

    from airflow.sdk import BaseHook

    from associate.capillary.settings import base_url_of

    conn = BaseHook.get_connection(conn_id)
    url = urlsplit(base_url_of(conn.host, conn.schema, conn.port))
    return Dataset(namespace=f"{url.scheme}://{url.netloc}", name=path)


def op_kwarg(kwargs: Mapping[str, Any], name: str) -> str | None:
    """A connection id from a task's (rendered) keyword arguments."""
    value = kwargs.get(name)
    return value if isinstance(value, str) and value else None
