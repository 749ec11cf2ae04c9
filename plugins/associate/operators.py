"""Operators of the associate pipeline.

DAG files import this module at parse time: everything heavy is imported in ``execute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

class AssociateCustomersOperator(BaseOperator):
    """Send one staged payload chunk to Capillary, batch by batch, and stage one outcome row per customer."""

    template_fields: Sequence[str] = ("payload_uri", "outcome_uri", "capillary_conn_id", "warehouse_conn_id")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        payload_uri: str,
        outcome_uri: str,
        capillary_conn_id: str = "capillary_default",
        warehouse_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.payload_uri = payload_uri
        self.outcome_uri = outcome_uri
        self.capillary_conn_id = capillary_conn_id
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Any) -> str:
        """Send the chunk; return the URI of its staged outcome."""
        from associate.hook import CapillaryHook
        from associate.sending import send_payload_chunk

        hook = CapillaryHook(capillary_conn_id=self.capillary_conn_id)
        try:
            return send_payload_chunk(
                hook, self.payload_uri, self.outcome_uri,
                run_id=str(context.get("run_id") or "manual"), warehouse_conn_id=self.warehouse_conn_id,
            )
        finally:
            hook.close()
