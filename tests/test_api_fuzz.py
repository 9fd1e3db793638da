"""Every operation of the OpenAPI schema, fed input that schema allows and input it forbids
(schemathesis generates both), answers without a server error (a bad value is a 4xx naming its
field, never a 500), and only as the schema says it may: with a status it documents, in the shape
it documents for that status. ``FUZZ_EXAMPLES`` (default 50) sets the cases per operation and
mode, for a deeper run by hand."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from profilestore.app import create_app
from profilestore.runtime import Runtime
from tests.conftest import Keys

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))

# Each operation with the key of a role it admits, so that input reaches the service, not the guard.
COLLECTED = ("/v1/consents", "/v1/preferences", "/v1/events", "/v1/batch", "/v1/track", "/v1/page")
COLLECTED += ("/v1/screen", "/v1/identify", "/v1/alias", "/v1/group")


def role_for(path: str) -> str:
    if path.startswith(COLLECTED):
        return "collector"
    if path.endswith("/view") or path == "/v1/views":
        return "reader"
    return "admin"


CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


def _operations(runtime: Runtime) -> list[Any]:
    # Operations are walked here: schemathesis's pytest fixture integration does not run under
    # pytest 9 (it reads a private attribute pytest no longer has).
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(runtime=runtime))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20, "the schema lists the API's operations"
    return operations


def test_every_operation_answers_valid_input_as_documented_never_with_a_500(runtime: Runtime, keys: Keys) -> None:
    for operation in _operations(runtime):
        _fuzz(operation, keys.header(role_for(operation.path)), GenerationMode.POSITIVE)


def test_every_operation_refuses_invalid_input_as_documented_never_with_a_500(runtime: Runtime, keys: Keys) -> None:
    """Input the schema forbids: a 4xx it documents, in the error shape (found bodies that were not
    UTF-8 answered 400 before the key was judged, and Segment fields documented narrower than read)."""
    for operation in _operations(runtime):
        if operation.path not in ("/healthz", "/readyz"):  # no input to get wrong
            _fuzz(operation, keys.header(role_for(operation.path)), GenerationMode.NEGATIVE)


def _fuzz(operation: Any, headers: dict[str, str], mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def answers_as_documented(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    answers_as_documented()
