"""Idempotency keys: a retried POST with the same key returns the first answer and writes nothing.

The key is claimed first, inside the request's transaction. On PostgreSQL a concurrent retry's
claim waits for the first transaction: if that commits, the retry replays its answer; if it rolls
back, the retry proceeds as the first attempt. On SQLite writers are serialised anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Header
from pydantic import BaseModel
from sqlalchemy import JSON, Integer, String, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from profilestore.db import Base
from profilestore.kit.errors import InvalidInput
from profilestore.kit.time import utcnow

ModelT = TypeVar("ModelT", bound=BaseModel)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KeyHeader = Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, max_length=200)]


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]


def request_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def claim(session: Session, client_id: str, key: str | None, fingerprint: str) -> dict[str, Any] | None:
    """Claim ``key`` for this request; returns the stored answer when it is a retry, else None.

    Reusing a key for a different request is refused: the caller has a bug, and guessing which
    request it meant would be worse.
    """
    if key is None:
        return None
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    claimed = session.execute(
        insert(IdempotencyKey)
        .values(
            client_id=client_id,
            key=key,
            request_sha256=fingerprint,
            status_code=0,
            response={},
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)  # rowcount is not reliable here across drivers; RETURNING is
    ).first()
    if claimed is not None:
        return None
    stored = session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.client_id == client_id, IdempotencyKey.key == key)
    ).one()
    if stored.request_sha256 != fingerprint:
        raise InvalidInput("this Idempotency-Key was already used for a different request", field="Idempotency-Key")
    return stored.response


def complete(session: Session, client_id: str, key: str | None, status_code: int, response: dict[str, Any]) -> None:
    """Store the answer of a claimed key, in the same transaction as the work it answers for."""
    if key is not None:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.client_id == client_id, IdempotencyKey.key == key)
            .values(status_code=status_code, response=response)
        )


def once(
    session: Session,
    client_id: str,
    key: str | None,
    payload: Any,
    produce: Callable[[], ModelT],
    model: type[ModelT],
    status_code: int = 201,
) -> tuple[ModelT, bool]:
    """Run ``produce`` once per (client, key); a retry gets the first answer back and writes
    nothing. Returns (answer, replayed)."""
    fingerprint = request_fingerprint(payload)
    stored = claim(session, client_id, key, fingerprint)
    if stored is not None:
        return model.model_validate(stored), True
    answer = produce()
    complete(session, client_id, key, status_code, answer.model_dump(mode="json"))
    return answer, False
