"""Clients and their keys. A key is 32 random bytes shown once; only its SHA-256 is stored (a
fast hash suffices for a full-entropy secret, and keeps authentication to one indexed lookup)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from profilestore.auth.models import Client, ClientPurpose
from profilestore.auth.schemas import ClientCreated, ClientIn, ClientOut, Role
from profilestore.kit.errors import InvalidInput, NotFound
from profilestore.kit.ids import new_id
from profilestore.kit.sql import fetch
from profilestore.kit.time import utcnow
from profilestore.purposes import service as purposes

KEY_PREFIX = "psk_"


@dataclass(frozen=True)
class Caller:
    """The authenticated client of a request."""

    client_id: str
    name: str
    role: Role
    purposes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _out(client: Client, purpose_keys: list[str]) -> ClientOut:
    return ClientOut(
        client_id=client.id,
        name=client.name,
        role=Role(client.role),
        purposes=purpose_keys,
        key_prefix=client.key_prefix,
        created_at=client.created_at,
        revoked_at=client.revoked_at,
    )


def _purposes_of(session: Session, client_id: str) -> list[str]:
    return list(
        session.scalars(
            select(ClientPurpose.purpose).where(ClientPurpose.client_id == client_id).order_by(ClientPurpose.purpose)
        )
    )


def create_client(session: Session, spec: ClientIn) -> ClientCreated:
    """Create a client and return its key, which is never retrievable again."""
    if spec.role is Role.reader and not spec.purposes:
        raise InvalidInput("a reader needs at least one purpose it may read for", field="purposes")
    if spec.role is not Role.reader and spec.purposes:
        raise InvalidInput("only readers are bound to purposes", field="purposes")
    purposes.require_purposes(session, spec.purposes, field="purposes.{index}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    client = Client(
        id=new_id("cli"),
        name=spec.name,
        role=spec.role.value,
        key_sha256=_digest(key),
        key_prefix=key[:12],
        created_at=utcnow(),
        revoked_at=None,
    )
    session.add(client)
    session.flush()
    for purpose in sorted(set(spec.purposes)):
        session.add(ClientPurpose(client_id=client.id, purpose=purpose))
    session.flush()
    return ClientCreated(**_out(client, sorted(set(spec.purposes))).model_dump(), key=key)


_BY_KEY = (
    select(Client.id, Client.name, Client.role, Client.revoked_at, ClientPurpose.purpose)
    .outerjoin(ClientPurpose, ClientPurpose.client_id == Client.id)
    .where(Client.key_sha256 == bindparam("digest"))
)


def authenticate(connection: Connection | Session, key: str) -> Caller | None:
    """The caller holding ``key``, or None for an unknown or revoked key: one indexed query (every
    request asks, and a revocation must end the key on the next request to any process)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    if isinstance(connection, Session):
        connection = connection.connection()
    found = fetch(connection, _BY_KEY, {"digest": _digest(key)})
    if not found:
        return None
    client_id, name, role, revoked_at, _ = found[0]
    if revoked_at is not None:
        return None
    return Caller(client_id, name, Role(role), frozenset(purpose for *_, purpose in found if purpose is not None))


def list_clients(session: Session) -> list[ClientOut]:
    clients = session.scalars(select(Client).order_by(Client.created_at)).all()
    return [_out(c, _purposes_of(session, c.id)) for c in clients]


def revoke_client(session: Session, client_id: str) -> ClientOut:
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound("no such client", field="client_id")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
    session.flush()
    return _out(client, _purposes_of(session, client.id))
