"""Airflow provider metadata: the ``capillary`` connection type, its form and its hook.

Airflow finds it through the ``apache_airflow_provider`` entry point of ``pyproject.toml``.
The form is declared here (``conn-fields``, ``ui-field-behaviour``) rather than by hook
methods: Airflow 3.2+ reads the declaration without importing the hook or wtforms.
Extra names are those ``ClientSettings.from_connection`` reads; defaults come from there.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "airflow-provider-capillary-associate"
CONN_TYPE = "capillary"
HOOK_CLASS_NAME = "associate.hook.CapillaryHook"

# (extra, label, JSON schema type, what it means); the default is the settings' own.
_TUNING = (
    ("rate_limit_rpm", "Rate limit (requests/min)", "number",
     "Request budget per minute of this credential, shared by every thread and task."),
    ("concurrency", "Concurrency", "integer", "Parallel requests per task."),
    ("batch_size", "Batch size", "integer", "Upper bound of elements per bulk request."),
    ("connect_timeout", "Connect timeout (s)", "number", "Seconds to open a connection."),
    ("read_timeout", "Read timeout (s)", "number", "Seconds to wait for an answer."),
    ("max_retries", "Max retries", "integer", "Retries on 5xx, timeouts and dropped connections."),
    ("backoff_base", "Backoff base (s)", "number", "Exponential backoff with full jitter: first step."),
    ("backoff_max", "Backoff max (s)", "number", "Exponential backoff with full jitter: longest step."),
    ("max_throttle_wait", "Max throttle wait (s)", "number",
     "Seconds a task may wait in all after 429s before it fails for Airflow to retry it."),
)


def _field(label: str, kind: str, description: str, *, secret: bool = False) -> dict[str, Any]:
    """One extra of the connection form (null allowed: an empty field keeps the default)."""
    schema: dict[str, Any] = {"type": [kind, "null"]}
    if secret:
        schema["format"] = "password"  # masked in the form and in the API's answers
    return {"label": label, "description": description, "schema": schema}


def conn_fields() -> dict[str, dict[str, Any]]:
    """The extras of a Capillary connection, as the connection form shows them."""
    from dataclasses import fields

    from associate.capillary.settings import ClientSettings

    defaults = {f.name: f.default for f in fields(ClientSettings)}
    form = {
        "oauth_key": _field("OAuth key", "string", "OAuth instead of till Basic auth when set."),
        "oauth_secret": _field("OAuth secret", "string", "Secret of the OAuth key.", secret=True),
    }
    for name, label, kind, description in _TUNING:
        form[name] = _field(label, kind, f"{description} Default {defaults[name]:g}.")
    form["verify"] = _field("Verify TLS", "boolean", "TLS verification; only an explicit false turns it off.")
    form["attribution_entity_type"] = _field(
        "Attribution entity type", "string", "X-CAP-API-ATTRIBUTION-ENTITY-TYPE header, e.g. TILL_CODE.")
    form["attribution_entity_code"] = _field(
        "Attribution entity code", "string", "X-CAP-API-ATTRIBUTION-ENTITY-CODE header.")
    form["default_phone_region"] = _field(
        "Default phone region", "string", "ISO 3166 alpha-2 region of numbers without a country code, e.g. IN.")
    return form


def get_provider_info() -> dict[str, Any]:
    """What Airflow's ProvidersManager reads from this package."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "Capillary (associate)",
        "description": "Capillary CRM: the connection type and hook of the associate customer sync.",
        "connection-types": [{
            "connection-type": CONN_TYPE,
            "hook-class-name": HOOK_CLASS_NAME,
            "hook-name": "Capillary",
            "ui-field-behaviour": {
                # The cluster URL carries its scheme and port.
                "hidden-fields": ["schema", "port"],
                "relabeling": {"host": "Cluster URL", "login": "Till login", "password": "Till password"},
                "placeholders": {"host": "https://eu.api.capillarytech.com", "login": "store.server"},
            },
            "conn-fields": conn_fields(),
        }],
    }
