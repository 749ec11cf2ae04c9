"""Operators of the associate pipeline.

DAG files import this module at parse time: everything heavy is imported in ``execute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseOperator
from airflow.sdk.bases.decorator import task_decorator_factory


class AssociateCustomersOperator(BaseOperator):
    """Send one staged payload chunk to Capillary, batch by batch, and stage one outcome row per customer.

    The chunk is the file ``payload_uri`` or, with ``rows`` (``[start, stop)``) and
    ``batch_size``, those rows of it (``associate.chunks``).
    """

    template_fields: Sequence[str] = ("payload_uri", "outcome_uri", "capillary_conn_id", "warehouse_conn_id")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        payload_uri: str,
        outcome_uri: str,
        capillary_conn_id: str = "capillary_default",
        warehouse_conn_id: str | None = None,
        rows: Sequence[int] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.payload_uri = payload_uri
        self.outcome_uri = outcome_uri
        self.capillary_conn_id = capillary_conn_id
        self.warehouse_conn_id = warehouse_conn_id
        self.rows = rows
        self.batch_size = batch_size

    def execute(self, context: Any) -> str:
        """Send the chunk; return the URI of its staged outcome."""
        from associate.hook import CapillaryHook
        from associate.sending import send_payload_chunk

        hook = CapillaryHook(capillary_conn_id=self.capillary_conn_id)
        try:
            return send_payload_chunk(
                hook, self.payload_uri, self.outcome_uri,
                run_id=str(context.get("run_id") or "manual"), warehouse_conn_id=self.warehouse_conn_id,
                timing_name=f"post-{self._chunk_number(context)}", rows=self.rows, batch_size=self.batch_size,
            )
        finally:
            hook.close()

    def _chunk_number(self, context: Any) -> int:
        """This mapped task's index; outside a mapped run, the number in the chunk outcome's file name (else 0)."""
        import re

        map_index = getattr(context.get("ti"), "map_index", None)
        if isinstance(map_index, int) and map_index >= 0:
            return map_index
        found = re.search(r"(\d+)\D*$", str(self.outcome_uri))
        return int(found.group(1)) if found else 0

    def get_openlineage_facets_on_start(self):
        """Lineage for OpenLineage: the warehouse's customers in; Capillary's bulk API and the sync state out."""
        from associate.lineage import task_lineage

        return task_lineage("post", warehouse_conn_id=self.warehouse_conn_id,
                            capillary_conn_id=self.capillary_conn_id)

    def get_openlineage_facets_on_complete(self, task_instance):
        """Lineage for OpenLineage, as on start (the datasets do not depend on the outcome)."""
        return self.get_openlineage_facets_on_start()


class LineagePythonOperator(_PythonDecoratedOperator):
    """A ``@task`` that tells OpenLineage the warehouse tables and Capillary APIs it reads and writes.

    The provider's extractor for Python tasks reports no datasets; an operator with these
    methods is asked instead. The datasets of each task id are in ``associate.lineage``.
    """

    custom_operator_name = "@task"

    def get_openlineage_facets_on_start(self):
        """Lineage for OpenLineage: this task's datasets, named from its connections."""
        from associate.lineage import op_kwarg, task_lineage

        return task_lineage(self.task_id, warehouse_conn_id=op_kwarg(self.op_kwargs, "warehouse_conn_id"),
                            capillary_conn_id=op_kwarg(self.op_kwargs, "capillary_conn_id"))

    def get_openlineage_facets_on_complete(self, task_instance):
        """Lineage for OpenLineage, as on start."""
        return self.get_openlineage_facets_on_start()


def lineage_task(python_callable, **kwargs):
    """``@task`` whose operator reports its datasets to OpenLineage (:class:`LineagePythonOperator`)."""
    return task_decorator_factory(python_callable=python_callable, decorated_operator_class=LineagePythonOperator,
                                  **kwargs)
