"""Who may call a route is part of its signature: ``caller: Collector``. The guard objects carry
their roles, so the authorisation matrix can be read off the routes (see the role-matrix test).
Views take ``credentials: ViewReader`` and admit their caller in their own database work
(``LateRoleGuard``)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from profilestore.auth.schemas import Role
from profilestore.auth.service import Caller, authenticate
from profilestore.db import read_again_if_disconnected
from profilestore.deps import database_work, get_runtime
from profilestore.kit.errors import Forbidden, Unauthenticated

MISSING_KEY = "missing credentials: send Authorization: Bearer <client key>"

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


class RoleGuard:
    """A dependency admitting clients whose role is one of ``roles``."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Caller:
        caller = await caller_from_key(request, credentials.credentials if credentials else None)
        return _admitted(caller, self.roles)


@dataclass(frozen=True)
class Credentials:
    """A client key its guard has not looked up yet: its route looks it up first thing in its own
    database work (``admit``), on the connection that then serves the route."""

    key: str
    roles: frozenset[Role]

    def admit(self, connection: Connection | Session) -> Caller:
        """The caller, if its key is known and its role admitted (else 401 or 403)."""
        return _admitted(_known(authenticate(connection, self.key)), self.roles)


_UNCHECKED = "profilestore_unchecked_credentials"


class LateRoleGuard(RoleGuard):
    """A guard for the hottest routes (views), whose lookup of the key is left to the route.

    Looked up here, the key took a database round of its own — on PostgreSQL a trip to the thread
    pool, a pooled connection and a round trip — before the route's own. The guard still decides
    first whenever the route does not run: FastAPI validates a route's parameters after its guards
    and answers a bad one before the route; the handler of that answer looks the key up first
    (``check_unchecked``), so a bad key still gets 401 or 403, never 422."""

    async def __call__(  # type: ignore[override]
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Credentials:
        if credentials is None or not credentials.credentials:
            raise Unauthenticated(MISSING_KEY)
        unchecked = Credentials(credentials.credentials, self.roles)
        setattr(request.state, _UNCHECKED, unchecked)
        return unchecked


async def check_unchecked(request: Request) -> None:
    """Decide a late guard's key before a request is answered without reaching its route: raises
    401 or 403 as the guard would have. Nothing to do for other requests."""
    unchecked: Credentials | None = getattr(request.state, _UNCHECKED, None)
    if unchecked is not None:
        _admitted(await caller_from_key(request, unchecked.key), unchecked.roles)


class WriteKeyGuard(RoleGuard):
    """Segment-style auth: the client key as the HTTP Basic user (empty password), as Segment and
    RudderStack SDKs send their write key; a Bearer key works too."""

    async def __call__(  # type: ignore[override]
        self, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Caller:
        key = None
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(value.strip(), validate=True).decode().split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                key = None
        elif scheme.lower() == "bearer":
            key = value.strip()
        return _admitted(await caller_from_key(request, key), self.roles)


Collector = Annotated[Caller, Depends(RoleGuard(Role.collector))]
WriteKey = Annotated[Caller, Depends(WriteKeyGuard(Role.collector))]
Reader = Annotated[Caller, Depends(RoleGuard(Role.reader))]
Privacy = Annotated[Caller, Depends(RoleGuard(Role.privacy, Role.admin))]
Admin = Annotated[Caller, Depends(RoleGuard(Role.admin))]
# Views are for readers; privacy and admin clients may read them too, to ``explain`` them.
ViewReader = Annotated[Credentials, Depends(LateRoleGuard(Role.reader, Role.privacy, Role.admin))]
AnyClient = Annotated[Caller, Depends(RoleGuard(*Role))]
