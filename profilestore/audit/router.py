"""Who read or changed what of a subject's data: for privacy and admin clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from profilestore.audit import service
from profilestore.auth.dependencies import Privacy
from profilestore.deps import ReadSession, RecorderDep
from profilestore.identity import service as identity
from profilestore.kit.chain import Verification

router = APIRouter(tags=["audit"])


class AuditEntry(BaseModel):
    seq: int
    at: datetime
    client_id: str | None
    action: str
    subject_id: str | None
    purpose: str | None
    detail: dict[str, Any]
    hash: str


@router.get("/v1/audit")
def audit(
    subject_id: Annotated[str, Query(min_length=1, max_length=40)],
    session: ReadSession,
    recorder: RecorderDep,
    _: Privacy,
) -> list[AuditEntry]:
    """Every logged access to the subject's data (its whole lineage), oldest first."""
    # Reads buffered by this process are written first: before the session's first read, which
    # fixes what it sees (SQLite's read transaction), so this stays here, not in a service.
    recorder.flush()
    live = identity.current(session, subject_id) or subject_id
    entries = service.entries_for(session, list(identity.lineage(session, live)))
    return [
        AuditEntry(
            seq=e.seq,
            at=e.at,
            client_id=e.client_id,
            action=e.action,
            subject_id=e.subject_id,
            purpose=e.purpose,
            detail=e.detail,
            hash=e.hash,
        )
        for e in entries
    ]


@router.get("/v1/audit/verify")
def verify_access_log(session: ReadSession, recorder: RecorderDep, _: Privacy) -> Verification:
    """Walk the access log's hash chain (this process's buffered reads written first);
    ``first_bad`` names the first broken link."""
    recorder.flush()
    return service.verify(session)
