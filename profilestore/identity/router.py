"""Subject lookup for privacy and admin clients. Identifiers travel in the body, never the URL."""

from __future__ import annotations

from fastapi import APIRouter

from profilestore.audit import service as audit
from profilestore.auth.dependencies import Privacy
from profilestore.deps import SettingsDep, VaultDep, WriteSession
from profilestore.identity import service
from profilestore.identity.schemas import ResolveIn, ResolveOut
from profilestore.kit.errors import NotFound

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])


@router.post("/resolve")
def resolve(
    body: ResolveIn, session: WriteSession, vault: VaultDep, settings: SettingsDep, caller: Privacy
) -> ResolveOut:
    """The subject these identifiers belong to; 404 when none. Creates and merges nothing."""
    subject_id = service.find(session, vault, settings, body.identifiers.present())
    audit.log(
        session,
        client_id=caller.client_id,
        action="subject.resolve",
        subject_id=subject_id,
        detail={"identifier_kinds": sorted(body.identifiers.present()), "found": subject_id is not None},
    )
    if subject_id is None:
        raise NotFound("no subject has these identifiers")
    return ResolveOut(subject_id=subject_id)
