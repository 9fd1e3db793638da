"""Who may call a route is part of its signature: ``caller: Collector``. The guard objects carry
their roles, so the authorisation matrix can be read off the routes (see the role-matrix test)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from profilestore.auth.schemas import Role
from profilestore.auth.service import Caller, authenticate
from profilestore.db import read_again_if_disconnected
from profilestore.deps import database_work, get_runtime
from profilestore.kit.errors import Forbidden, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="Client key: `Authorization: Bearer psk_…`")


async def caller_from_key(request: Request, key: str | None) -> Caller:
    if not key:
        raise Unauthenticated("missing credentials: send Authorization: Bearer <client key>")
    database = get_runtime(request).db

    def lookup() -> Caller | None:
        with database.single_read() as connection:
            return authenticate(connection, key)

    caller = await database_work(database, lambda: read_again_if_disconnected(lookup))
    if caller is None:
        raise Unauthenticated("invalid or revoked client key")
    request.state.client_id = caller.client_id
    return caller


class RoleGuard:
    """A dependency admitting clients whose role is one of ``roles``."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Caller:
        caller = await caller_from_key(request, credentials.credentials if credentials else None)
        if caller.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise Forbidden(f"this endpoint is for {allowed} clients")
        return caller


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
        caller = await caller_from_key(request, key)
        if caller.role not in self.roles:
            raise Forbidden("this endpoint is for collector clients")
        return caller


Collector = Annotated[Caller, Depends(RoleGuard(Role.collector))]
WriteKey = Annotated[Caller, Depends(WriteKeyGuard(Role.collector))]
Reader = Annotated[Caller, Depends(RoleGuard(Role.reader))]
Privacy = Annotated[Caller, Depends(RoleGuard(Role.privacy, Role.admin))]
Admin = Annotated[Caller, Depends(RoleGuard(Role.admin))]
# Views are for readers; privacy and admin clients may read them too, to ``explain`` them.
ViewReader = Annotated[Caller, Depends(RoleGuard(Role.reader, Role.privacy, Role.admin))]
AnyClient = Annotated[Caller, Depends(RoleGuard(*Role))]
