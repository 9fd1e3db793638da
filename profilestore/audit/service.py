"""The access log: every privacy action and consent change, append-only and hash-chained."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from profilestore.audit.models import AccessLogEntry
from profilestore.kit.chain import ChainWriter
from profilestore.kit.ids import new_id
from profilestore.kit.time import utcnow

CHAIN = "access"


def _content(entry: AccessLogEntry) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "at": entry.at,
        "client_id": entry.client_id,
        "action": entry.action,
        "subject_id": entry.subject_id,
        "purpose": entry.purpose,
        "detail": entry.detail,
    }


def log(
    session: Session,
    *,
    client_id: str | None,
    action: str,
    subject_id: str | None = None,
    purpose: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry in the caller's transaction: it commits (or not) with what it records.
    ``detail`` must never hold personal values: ids, counts and field names only."""
    entry = AccessLogEntry(
        entry_id=new_id("acc"),
        at=utcnow(),
        client_id=client_id,
        action=action,
        subject_id=subject_id,
        purpose=purpose,
        detail=detail or {},
    )
    link = ChainWriter(session, CHAIN).append(_content(entry))
    entry.seq, entry.prev_hash, entry.hash = link.seq, link.prev_hash, link.hash
    session.add(entry)
    session.flush()


def entries_for(session: Session, subject_ids: list[str]) -> list[AccessLogEntry]:
    return list(
        session.scalars(
            select(AccessLogEntry).where(AccessLogEntry.subject_id.in_(subject_ids)).order_by(AccessLogEntry.seq)
        )
    )
