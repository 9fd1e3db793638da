"""Views for personalisation engines: one purpose per read, nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from profilestore.auth.dependencies import ViewReader
from profilestore.deps import ReadSession, RecorderDep, SettingsDep, VaultDep
from profilestore.kit.time import utcnow
from profilestore.views import service
from profilestore.views.schemas import ViewIn, ViewOut

router = APIRouter(tags=["views"])


@router.get("/v1/subjects/{subject_id}/view")
def get_view(
    subject_id: str,
    purpose: Annotated[str, Query(min_length=1, max_length=200)],
    session: ReadSession,
    vault: VaultDep,
    settings: SettingsDep,
    recorder: RecorderDep,
    caller: ViewReader,
    include: Annotated[list[str] | None, Query(max_length=5)] = None,
    explain: bool = False,
    limit: Annotated[int | None, Query(description="recent events to include")] = None,
) -> ViewOut:
    """The subject's view for ``purpose``. Unknown and non-consenting subjects get the same
    default view (``personalised: false``). ``include=recent_events`` adds the latest permitted
    events; ``explain=true`` (privacy, admin) lists what was left out and why."""
    q = service.query(settings, purpose, include or [], explain, limit)
    return service.build(session, vault, settings, caller, q, subject_id, recorder, utcnow())


@router.post("/v1/views")
def post_view(
    body: ViewIn,
    session: ReadSession,
    vault: VaultDep,
    settings: SettingsDep,
    recorder: RecorderDep,
    caller: ViewReader,
) -> ViewOut:
    """The same view, naming the person by identifiers (kept out of URLs) or subject id."""
    q = service.query(settings, body.purpose, body.include, body.explain, None)
    subject_ref = body.subject_id
    if body.identifiers is not None:
        subject_ref = service.subject_for(session, vault, settings, body.identifiers.present())
    return service.build(session, vault, settings, caller, q, subject_ref, recorder, utcnow())
