"""Who may call a route is part of its signature: ``caller: Collector``. The guard objects carry
their roles, so the authorisation matrix can be read off the routes (see the role-matrix test).
Views take ``credentials: ViewReader`` and admit their caller in their own database work
(``LateRoleGuard``). Whatever else is wrong with a request, a bad key is what it is told first
(``judge_before_refusing``)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPBearer
from fastapi.security.base import SecurityBase
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from profilestore.auth.schemas import Role
from profilestore.auth.service import Caller, authenticate
from profilestore.db import read_again_if_disconnected
from profilestore.deps import database_work, get_runtime
from profilestore.kit.errors import Forbidden, Unauthenticated

MISSING_KEY = "missing credentials: send Authorization: Bearer <client key>"

# The scheme the guards are, as OpenAPI documents it (they read the header themselves).
_bearer = HTTPBearer(auto_error=False, description="Client key: `Authorization: Bearer psk_…`")


async def caller_from_key(request: Request, key: str | None) -> Caller:
    if not key:
        raise Unauthenticated(MISSING_KEY)
    database = get_runtime(request).db

    def lookup() -> Caller | None:
        with database.single_read() as connection:
            return authenticate(connection, key)

    return _known(await database_work(database, lambda: read_again_if_disconnected(lookup)))


def _known(caller: Caller | None) -> Caller:
    if caller is None:
        raise Unauthenticated("invalid or revoked client key")
    return caller


def _admitted(caller: Caller, roles: frozenset[Role]) -> Caller:
    if caller.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise Forbidden(f"this endpoint is for {allowed} clients")
    return caller


_ADMITTED = "profilestore_caller_admitted"


class RoleGuard(SecurityBase):
    """A dependency admitting clients whose role is one of ``roles``. It reads the key from the
    ``Authorization`` header itself (``key_in``) and is, to FastAPI, the bearer scheme it
    documents in OpenAPI: reading it through an ``HTTPBearer`` dependency cost every request a
    further round of FastAPI's per-request dependency work."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)
        self.model = _bearer.model
        self.scheme_name = _bearer.scheme_name

    async def __call__(self, request: Request) -> Caller:
        return await self.judge(request, self.key_in(request.headers.get("authorization")))

    def key_in(self, authorization: str | None) -> str | None:
        """The client key in an ``Authorization`` header, as this guard reads it: a Bearer token."""
        scheme, _, value = (authorization or "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    async def judge(self, request: Request, key: str | None) -> Caller:
        """The caller holding ``key``, if this guard admits it (else 401 or 403)."""
        caller = _admitted(await caller_from_key(request, key), self.roles)
        setattr(request.state, _ADMITTED, True)
        return caller


@dataclass(frozen=True)
class Credentials:
    """A client key its guard has not looked up yet: its route looks it up first thing in its own
    database work (``admit``), on the connection that then serves the route."""

    key: str
    roles: frozenset[Role]

    def admit(self, connection: Connection | Session) -> Caller:
        """The caller, if its key is known and its role admitted (else 401 or 403)."""
        return _admitted(_known(authenticate(connection, self.key)), self.roles)


class LateRoleGuard(RoleGuard):
    """A guard for the hottest routes (views), whose lookup of the key is left to the route.

    Looked up here, the key took a database round of its own — on PostgreSQL a trip to the thread
    pool, a pooled connection and a round trip — before the route's own. When the route does not
    run (FastAPI judges its parameters after its guards and answers a bad one itself), the key
    is still decided first: see ``judge_before_refusing``."""

    async def __call__(self, request: Request) -> Credentials:  # type: ignore[override]
        key = self.key_in(request.headers.get("authorization"))
        if not key:
            raise Unauthenticated(MISSING_KEY)
        return Credentials(key, self.roles)


class WriteKeyGuard(RoleGuard):
    """Segment-style auth: the client key as the HTTP Basic user (empty password), as Segment and
    RudderStack SDKs send their write key; a Bearer key works too."""

    async def __call__(self, request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
        # The header as a parameter: OpenAPI shows Segment's senders where their write key goes.
        return await self.judge(request, self.key_in(authorization))

    def key_in(self, authorization: str | None) -> str | None:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value.strip(), validate=True).decode().split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                return None
        return super().key_in(authorization)


def guard_of(dependant: Dependant) -> RoleGuard | None:
    """The role guard among a route's dependencies (a route states its roles once)."""
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RoleGuard):
            return dependency.call
        found = guard_of(dependency)
        if found is not None:
            return found
    return None


async def judge_before_refusing(request: Request) -> None:
    """Decide the caller of a request refused before its route ran, as its guard would, raising
    401 or 403: the key is judged before anything else about a request. FastAPI parses a JSON
    body before it calls the guards, and a late guard leaves its lookup to the route: in both
    cases a request with a bad key would otherwise learn what is wrong with its parameters.
    Nothing to do once a guard has admitted the caller, or for a route without a guard."""
    if getattr(request.state, _ADMITTED, False):
        return
    dependant = getattr(request.scope.get("route"), "dependant", None)
    guard = guard_of(dependant) if dependant is not None else None
    if guard is not None:
        await guard.judge(request, guard.key_in(request.headers.get("authorization")))


Collector = Annotated[Caller, Depends(RoleGuard(Role.collector))]
WriteKey = Annotated[Caller, Depends(WriteKeyGuard(Role.collector))]
Reader = Annotated[Caller, Depends(RoleGuard(Role.reader))]
Privacy = Annotated[Caller, Depends(RoleGuard(Role.privacy, Role.admin))]
Admin = Annotated[Caller, Depends(RoleGuard(Role.admin))]
# Views are for readers; privacy and admin clients may read them too, to ``explain`` them.
ViewReader = Annotated[Credentials, Depends(LateRoleGuard(Role.reader, Role.privacy, Role.admin))]
AnyClient = Annotated[Caller, Depends(RoleGuard(*Role))]
