"""The OpenAPI 3.1 document of the sandbox (served at ``/openapi.json``)."""

from __future__ import annotations


def openapi_document() -> dict:
    """The document (filled in below)."""
    return {"openapi": "3.1.0", "info": {"title": "Capillary sandbox", "version": "1.0"}, "paths": {}}
