"""Airflow hook of a Capillary connection: the connection in, a ``CapillaryClient`` out.

Shaped like the HTTP and SQLite provider hooks: the connection holds the cluster URL and
the credentials, extras hold the client's tuning, ``get_conn()`` returns the client. The
``capillary`` connection type, its form and the UI's Test button (``test_connection``)
are registered by the provider entry point (``associate.provider_info``). The
work itself is in ``associate.capillary``; ``requests`` is imported only when a call is
made, so DAG files importing this module stay cheap to parse.
"""

from __future__ import annotations

from airflow.sdk import BaseHook

from associate.capillary.client import CapillaryClient
from associate.capillary.settings import ClientSettings
from associate.capillary.transport import CallStats


class CapillaryHook(BaseHook):
    """Build the Capillary client of an Airflow connection (one client per hook)."""

    conn_name_attr = "capillary_conn_id"
    default_conn_name = "capillary_default"
    # The connection type this package registers (provider_info.py declares its form);
    # any connection with a host and credentials works, ``http`` ones too.
    conn_type = "capillary"
    hook_name = "Capillary"

    def __init__(self, capillary_conn_id: str = default_conn_name, *, settings: ClientSettings | None = None):
        super().__init__()
        self.capillary_conn_id = capillary_conn_id
        self._settings = settings
        self._client: CapillaryClient | None = None

    @property
    def settings(self) -> ClientSettings:
        """The connection's settings (read once per hook)."""
        if self._settings is None:
            self._settings = ClientSettings.from_connection(self.get_connection(self.capillary_conn_id))
        return self._settings

    def get_conn(self) -> CapillaryClient:
        """Return this hook's client: its pooled session, counters and batch limit live as long as the hook."""
        if self._client is None:
            self._client = CapillaryClient(self.settings)
        return self._client

    @property
    def stats(self) -> CallStats:
        """The client's request, retry, 429, timeout and 5xx counters."""
        return self.get_conn().stats

    def close(self) -> None:
        """Close the client's pooled connections."""
        if self._client is not None:
            self._client.close()

    def test_connection(self) -> tuple[bool, str]:
        """Check credentials by reading the hierarchy definitions (the UI's Test button)."""
        try:
            count = len(self.get_conn().get_hierarchies())
        except Exception as exc:  # the UI wants a message, not a traceback
            return False, str(exc)
        return True, f"Connected: {count} hierarchy definitions"
