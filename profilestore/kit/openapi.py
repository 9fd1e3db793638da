"""The OpenAPI document, completed: each operation lists every status it can answer, each error
with the one shape every error has (``ErrorBody``); routes that read their body themselves still
show it (``json_body``).

FastAPI documents a 422 of its own shape (``{"detail": [...]}``), which this service never sends,
and nothing else. The errors every route of a kind can answer are added here, from the document
itself: an operation with a security requirement (a role guard) can answer 401 and 403, and 503
when the database it looks the key up in is down; one with a body, 413. A route states the errors
only it can answer (404, 409) with ``errors(...)``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from profilestore.kit.http import ErrorBody

REF = "#/components/schemas/{model}"


WHY = {
    401: "No key, or an unknown or revoked one",
    403: "The key's role (or, for a reader, its purposes) does not allow this",
    413: "The body is larger than this route's limit",
    422: "Invalid input; `field` names the first problem",
    503: "The database is unavailable; nothing was written, retry later",
}


def errors(why: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own errors, by status, e.g. ``errors({404: "No such purpose"})``."""
    return {status: {"model": ErrorBody, "description": description} for status, description in why.items()}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra=`` for a route that reads its JSON body itself (the Segment routes: gzip),
    so that the document still shows the body it takes."""
    schema = model.model_json_schema(ref_template=REF)
    # The model and those it refers to travel as ``$defs``; ``complete_openapi`` files them all
    # under the document's schemas, where the body then refers to it by name.
    defs = {**schema.pop("$defs", {}), model.__name__: schema}
    body = {"$ref": REF.format(model=model.__name__), "$defs": defs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def complete_openapi(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document state the errors of every operation (see the module), and
    the bodies stated with ``json_body``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _complete(generate())  # FastAPI keeps the document it made in ``app.openapi_schema``
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    found = ErrorBody.model_json_schema(ref_template=REF)
    schemas.update(found.pop("$defs", {}))
    schemas[ErrorBody.__name__] = found
    error = {"application/json": {"schema": {"$ref": REF.format(model=ErrorBody.__name__)}}}
    for operation in _operations(document):
        # A body stated with ``json_body`` carries the models it refers to: they go with the others.
        for content in operation.get("requestBody", {}).get("content", {}).values():
            schemas.update(content.get("schema", {}).pop("$defs", {}))
        responses = operation["responses"]
        statuses = {"422"} & responses.keys()
        if operation.get("security"):
            statuses |= {"401", "403", "503"}
        if "requestBody" in operation:
            statuses.add("413")
        for status in statuses:
            responses[status] = {"description": WHY[int(status)], "content": error}
    # FastAPI's own 422 shapes: every 422 above now names ours.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    methods = {"get", "put", "post", "delete", "patch"}
    return [op for item in document.get("paths", {}).values() for method, op in item.items() if method in methods]
