"""HTTP plumbing shared by every router: request ids, the error shape, body size limits.

Errors always render as ``{"error": {"code", "message", "field"}}``. Validation messages name the
field and the problem but never echo the submitted value: it may be an email address.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DataError, DBAPIError, OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from profilestore import metrics
from profilestore.crypto.keyring import MasterKeyError
from profilestore.kit.errors import DomainError, InvalidInput

log = logging.getLogger("profilestore.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error the service answers (and the OpenAPI document states, ``kit/openapi.py``): a
    code, a message that never echoes the submitted value, and the field at fault if there is one."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return ErrorBody(error=ErrorDetail(code=code, message=message, field=field)).model_dump()


class RequestContextMiddleware:
    """Gives every request an ``X-Request-Id`` (a well-formed incoming one is kept) and enforces
    the body size limit before any byte reaches a handler."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, route_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_limits = route_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        limit = self.route_limits.get(scope["path"], self.max_body_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send_with_id, limit)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            await self._too_large(send_with_id, limit)
        finally:
            # Label by route template, never the raw path: paths carry subject ids.
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.REQUESTS.labels(scope["method"], route, f"{status // 100}xx").observe(time.perf_counter() - started)

    async def _too_large(self, send: Send, limit: int) -> None:
        response = JSONResponse(
            error_body("payload_too_large", f"request body is larger than {limit} bytes", "body"),
            status_code=413,
        )
        await response({"type": "http"}, _empty_receive, send)


class BatchSpreadMiddleware:
    """Spreads event batches over the serving processes of ``profilestore serve --workers N``, and
    works on at most ``per_process`` of them at once in each.

    A batch is CPU work for a whole core, and a process runs Python on one: beyond two batches
    at once (one writes while the other is worked out), more only fight over that core, each
    taking longer. So a process starts at most ``per_process`` batches; the others wait their turn
    without working.

    A keep-alive connection stays with the process that accepted it, and a process accepts every
    connection waiting when it wakes: a few senders that connect at once often all land on one
    process, which then works on every batch while the others idle (runs of the event bench
    halved). So when a process holds more batches than ``per_process``, its answer carries
    ``Connection: close``: the sender reconnects, and the next process to accept is most likely
    one with a core to spare. Below the limit nothing changes. Other routes are left alone: a view
    is too short for a reconnect to pay."""

    def __init__(self, app: ASGIApp, paths: frozenset[str], per_process: int) -> None:
        self.app = app
        self.paths = paths
        self.per_process = per_process
        self.in_flight = 0  # this process's batches: one event loop, so no lock
        self.turns = anyio.Semaphore(per_process)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def send_spread(message: Message) -> None:
            if message["type"] == "http.response.start" and self.in_flight > self.per_process:
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        self.in_flight += 1
        try:
            async with self.turns:
                await self.app(scope, receive, send_spread)
        finally:
            self.in_flight -= 1


class _BodyTooLarge(StarletteHTTPException):
    """Raised while a handler reads the body. An HTTPException, because FastAPI turns anything
    else raised during body parsing into a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def _field_of(loc: tuple[Any, ...], kind: str = "") -> str | None:
    if kind == "json_invalid":
        return "body"  # its location is a character offset, not a field
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    if kind == "extra_forbidden" and parts and not _PLAIN_NAME.match(parts[-1]):
        parts = parts[:-1]  # an unknown key is the client's text (it could be an email): don't echo it
    return ".".join(parts) or (str(loc[0]) if loc else None)


def _validation_message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    if kind == "json_invalid":
        return "body is not valid JSON"
    if kind == "timezone_aware":
        return "timestamp must carry a time zone (for example 2026-01-31T12:00:00Z)"
    return str(err.get("msg", "invalid value"))


def error_response(exc: DomainError) -> JSONResponse:
    """A domain error as the API answers it: raised (the handler below), or returned by a route
    whose transaction must still commit (a lookup that found nobody is still logged)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(error_body(exc.code, exc.message, exc.field), exc.status_code, headers=headers)


def _holds_nul(exc: SQLAlchemyError) -> bool:
    """Whether the database refused a value for holding a NUL character: PostgreSQL's text cannot
    (its driver refuses the parameter before sending it). The client's input, not our fault: 422.
    SQLite stores such text; a lookup by it finds nothing."""
    return isinstance(exc, DataError) and "NUL (0x00)" in str(exc.orig)


def unparsable_body(cause: BaseException) -> InvalidInput:
    """The refusal of a body the JSON parser gave up on: text that is not JSON, bytes that are not
    UTF-8, or arrays and objects nested deeper than Python's parser goes (a RecursionError)."""
    if isinstance(cause, RecursionError):
        return InvalidInput("body is nested too deeply", field="body")
    return InvalidInput("body is not valid JSON (UTF-8)", field="body")


def install_error_handlers(app: FastAPI, check_caller: Callable[[Request], Awaitable[None]]) -> None:
    """``check_caller`` judges the caller of a request that FastAPI refuses before its route runs
    (a body that is not JSON, a bad parameter), as the route's guard would, raising a DomainError:
    a bad key is refused as such before anything about the request's content is said."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return error_response(exc)

    async def refusal_of_caller(request: Request) -> JSONResponse | None:
        try:
            await check_caller(request)
        except DomainError as refused:
            return error_response(refused)
        return None

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if refusal := await refusal_of_caller(request):
            return refusal
        first = exc.errors()[0] if exc.errors() else {}
        field = _field_of(tuple(first.get("loc", ())), str(first.get("type", "")))
        return JSONResponse(error_body("invalid", _validation_message(first), field), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI could not read the body it was to parse as JSON (bytes that are not UTF-8,
            # say): refused, like a body that is not JSON, after the key (FastAPI's 400 said
            # nothing of the key, and not which part of the request was wrong).
            if refusal := await refusal_of_caller(request):
                return refusal
            return error_response(unparsable_body(exc.__cause__))
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        field = "body" if exc.status_code == 413 else None
        return JSONResponse(error_body(code, str(exc.detail), field), exc.status_code, headers=exc.headers)

    @app.exception_handler(MasterKeyError)
    async def _master_key(request: Request, exc: MasterKeyError) -> JSONResponse:
        log.error("master key problem (request %s): %s", getattr(request.state, "request_id", None), exc)
        return JSONResponse(
            error_body(
                "unavailable", "this process does not hold the master key protecting this data; nothing was written"
            ),
            503,
        )

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # Never render the statement or its parameters: they may hold ciphertext or blind indexes.
        request_id = getattr(request.state, "request_id", None)
        if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
            log.error("database unavailable (request %s): %s", request_id, type(exc.orig).__name__)
            return JSONResponse(
                error_body("unavailable", "the database is unavailable; nothing was written, retry later"), 503
            )
        if _holds_nul(exc):
            return JSONResponse(
                error_body("invalid", "text must not contain NUL (U+0000) characters; nothing was written"), 422
            )
        # Engines hide statement parameters, so the traceback carries no personal values.
        log.error("database error (request %s): %s", request_id, type(exc).__name__, exc_info=exc)
        return JSONResponse(error_body("internal", "the request failed; nothing was written"), 500)
