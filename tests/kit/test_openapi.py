"""The OpenAPI document states the errors the service answers, in the shape it answers them: a
client generated from it reads ``{"error": {...}}``, not FastAPI's ``{"detail": [...]}``. (Real
answers are held to the document by schemathesis in ``tests/test_api_fuzz.py``.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from profilestore.kit.http import ErrorBody
from tests.conftest import Keys

ERROR_REF = "#/components/schemas/ErrorBody"


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def _schema_of(response: dict[str, Any]) -> dict[str, Any]:
    return dict(response.get("content", {}).get("application/json", {}).get("schema", {}))


def test_every_error_an_operation_documents_has_the_one_error_shape(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    wrong = []
    for name, operation in _operations(document):
        for status, response in operation["responses"].items():
            expected = "#/components/schemas/Readiness" if name == "GET /readyz" else ERROR_REF
            if int(status) >= 400 and _schema_of(response).get("$ref") != expected:
                wrong.append(f"{name} {status}: {_schema_of(response)}")
    assert not wrong
    assert "HTTPValidationError" not in json.dumps(document)


def test_guarded_operations_document_401_403_and_503_and_those_with_a_body_413(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    missing = []
    guarded = bodies = 0
    for name, operation in _operations(document):
        expected = set()
        if operation.get("security"):
            guarded += 1
            expected |= {"401", "403", "503"}
        if "requestBody" in operation:
            bodies += 1
            expected.add("413")
        if expected - operation["responses"].keys():
            missing.append(f"{name}: lacks {sorted(expected - operation['responses'].keys())}")
    assert not missing
    assert guarded > 20 and bodies > 10  # the API's routes, not an empty document


def test_the_segment_routes_document_the_body_they_read_themselves(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    batch = document["paths"]["/v1/batch"]["post"]["requestBody"]
    assert _schema_of(batch) == {"$ref": "#/components/schemas/SegmentBatch"}
    track = document["paths"]["/v1/track"]["post"]["requestBody"]
    assert _schema_of(track) == {"$ref": "#/components/schemas/SegmentCall"}
    assert "type" not in document["components"]["schemas"]["SegmentCall"].get("required", [])


def test_every_reference_in_the_document_resolves(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    text = json.dumps(document)
    refs = {part.split('"')[0] for part in text.split('"$ref": "')[1:]}
    assert ERROR_REF in refs
    named = document["components"]["schemas"]
    dangling = [ref for ref in refs if ref.removeprefix("#/components/schemas/") not in named]
    assert not dangling
    assert "$defs" not in text


def test_the_errors_sent_are_the_documented_shape(api: TestClient, keys: Keys) -> None:
    """401, 403, 413 and 422 as answered, validated by the model the document is made from (it
    forbids fields it does not name)."""
    answers = {
        401: api.get("/v1/purposes"),
        403: api.get("/v1/clients", headers=keys.header("reader")),
        413: api.post("/v1/consents", headers=keys.header("collector"), content=b"x" * 2_000_000),
        422: api.post("/v1/consents", headers=keys.header("collector"), json={}),
    }
    for status, answer in answers.items():
        assert answer.status_code == status, answer.text
        ErrorBody.model_validate(answer.json())
