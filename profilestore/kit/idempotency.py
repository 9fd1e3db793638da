"""Idempotency keys: a retried POST with the same key returns the first answer and writes nothing."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from profilestore.db import Base
from profilestore.kit.errors import InvalidInput
from profilestore.kit.time import utcnow


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


def replay(session: Session, client_id: str, key: str | None, fingerprint: str) -> dict[str, Any] | None:
    """The stored answer for a retry, or None for a first attempt.

    Reusing a key for a different request is refused: the caller has a bug, and guessing which
    request it meant would be worse.
    """
    if key is None:
        return None
    stored = session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.client_id == client_id, IdempotencyKey.key == key)
    ).one_or_none()
    if stored is None:
        return None
    if stored.request_sha256 != fingerprint:
        raise InvalidInput("this Idempotency-Key was already used for a different request", field="Idempotency-Key")
    return stored.response


def remember(
    session: Session, client_id: str, key: str | None, fingerprint: str, status_code: int, response: dict[str, Any]
) -> None:
    if key is not None:
        session.add(
            IdempotencyKey(
                client_id=client_id,
                key=key,
                request_sha256=fingerprint,
                status_code=status_code,
                response=response,
                created_at=utcnow(),
            )
        )
