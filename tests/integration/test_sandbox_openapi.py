"""Schemathesis against the sandbox's own /openapi.json (faults off): no 5xx, no schema violation."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

import requests

from associate.sandbox.launcher import SandboxProcess
from associate.sandbox.openapi import openapi_document
from sandbox_support import basic_header

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    # Generated elements mostly fail the identifier rules; the documented form answers an
    # all-failed batch 200 with per-element results, so not_a_server_error means "no server bug".
    db = tmp_path_factory.mktemp("schemathesis") / "sandbox.db"
    with SandboxProcess(db) as running:
        yield running


# The document the server serves is built by this function (checked below); loading it here lets
# schemathesis parametrize at collection time, before the sandbox runs.
schema = schemathesis.openapi.from_dict(openapi_document())


def test_served_document_is_the_one_tested(sandbox):
    served = requests.get(sandbox.url + "/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == openapi_document()


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_honours_its_openapi_document(case, sandbox):
    case.call_and_validate(base_url=sandbox.url, headers=basic_header(), checks=CHECKS, timeout=30)


@pytest.mark.parametrize("form", ["500", "500-bare"])
def test_all_failed_500_matches_the_document(tmp_path, form):
    """The 500 forms of "all requests failed" are documented too (not a server bug)."""
    with SandboxProcess(tmp_path / "s.db", extra_args=("--error-form", form)) as sandbox:
        api = schemathesis.openapi.from_url(sandbox.url + "/openapi.json")
        operation = api["/v2/customers/bulk"]["POST"]
        case = operation.Case(body=[{"profiles": [{"identifiers": [{"type": "mobile", "value": "1"}]}],
                                     "loyaltyInfo": {"loyaltyType": "loyalty"}}],
                              media_type="application/json")
        response = case.call(base_url=sandbox.url, headers=basic_header())
        assert response.status_code == 500
        case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])
