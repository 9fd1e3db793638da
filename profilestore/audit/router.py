"""Who read or changed what of a subject's data: for privacy and admin clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Response
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


_NEXT_PAGE = {
    "Link": {"description": 'on a full page: `</v1/audit?…&after=<seq>…>; rel="next"`', "schema": {"type": "string"}}
}


@router.get("/v1/audit", responses={200: {"description": "a page of entries", "headers": _NEXT_PAGE}})
def audit(
    subject_id: Annotated[str, Query(min_length=1, max_length=40)],
    session: ReadSession,
    recorder: RecorderDep,
    response: Response,
    _: Privacy,
    after: Annotated[
        int, Query(ge=0, le=service.SEQ_MAX, description="the seq of the last entry of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=service.PAGE_MAX)] = service.PAGE_DEFAULT,
) -> list[AuditEntry]:
    """Logged accesses to the subject's data (its whole lineage), oldest first, a page at a time:
    a full page carries a ``Link`` header (``rel="next"``) to the next one; a shorter page is the
    last."""
    # Reads buffered by this process are written first: before the session's first read, which
    # fixes what it sees (SQLite's read transaction), so this stays here, not in a service.
    recorder.flush()
    live = identity.current(session, subject_id) or subject_id
    entries = service.entries_for(session, list(identity.lineage(session, live)), after=after, limit=limit)
    if len(entries) == limit:
        query = urlencode({"subject_id": subject_id, "after": entries[-1].seq, "limit": limit})
        response.headers["Link"] = f'</v1/audit?{query}>; rel="next"'
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
