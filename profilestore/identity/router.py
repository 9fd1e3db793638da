"""Subject lookup for privacy and admin clients. Identifiers travel in the body, never the URL."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from profilestore.auth.dependencies import Privacy
from profilestore.deps import SettingsDep, VaultDep, WriteSession
from profilestore.identity import service
from profilestore.identity.schemas import ResolveIn, ResolveOut
from profilestore.kit.errors import NotFound
from profilestore.kit.http import error_response
from profilestore.kit.openapi import errors

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])


@router.post(
    "/resolve",
    response_model=ResolveOut,
    responses=errors({404: "No subject has these identifiers", 409: "The identifiers belong to different subjects"}),
)
def resolve(
    body: ResolveIn, session: WriteSession, vault: VaultDep, settings: SettingsDep, caller: Privacy
) -> ResolveOut | JSONResponse:
    """The subject these identifiers belong to; 404 when none. Creates and merges nothing."""
    subject_id = service.look_up(session, vault, settings, body.identifiers.present(), client_id=caller.client_id)
    if subject_id is None:
        # Answered, not raised: a raised error would roll back the request's transaction, and with
        # it the log of a lookup that found nobody (a probe is what the log is for).
        return error_response(NotFound("no subject has these identifiers"))
    return ResolveOut(subject_id=subject_id)
