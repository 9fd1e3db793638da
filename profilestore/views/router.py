"""Views for personalisation engines: one purpose per read, nothing else.

The hottest routes of the service, so they take no more from FastAPI than they need: the caller's
credentials and the parameters (the GET's query as one model, ``ViewParams``). The caller's key is
looked up, and the view built and serialised, in one piece of database work on one connection
(see ``deps.database_work`` and ``auth.dependencies.LateRoleGuard``), and sent as the JSON bytes
of ``ViewOut``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from profilestore.auth.dependencies import Credentials, ViewReader
from profilestore.db import read_again_if_disconnected
from profilestore.deps import database_work, get_runtime
from profilestore.kit.time import utcnow
from profilestore.runtime import Runtime
from profilestore.views import service
from profilestore.views.schemas import ViewIn, ViewOut, ViewParams

router = APIRouter(tags=["views"])


def _view_json(
    runtime: Runtime,
    credentials: Credentials,
    ask: Callable[[], service.ViewQuery],
    subject_ref: str | None,
    identifiers: dict[str, str] | None,
) -> bytes:
    with runtime.db.read_session(transaction=False) as session:
        caller = credentials.admit(session)  # first: a bad key gets 401, whatever else is wrong
        q = ask()
        if identifiers is not None:
            subject_ref = service.subject_for(session, runtime.vault, runtime.settings, identifiers)
        view = service.build(
            session, runtime.vault, runtime.settings, caller, q, subject_ref, runtime.recorder, utcnow()
        )
    return view.model_dump_json().encode()


async def _respond(
    request: Request,
    credentials: Credentials,
    ask: Callable[[], service.ViewQuery],
    subject_ref: str | None,
    identifiers: dict[str, str] | None,
) -> Response:
    runtime = get_runtime(request)
    # A view is recorded only once built: read again after a lost connection, it is logged once.
    work = partial(_view_json, runtime, credentials, ask, subject_ref, identifiers)
    body = await database_work(runtime.db, partial(read_again_if_disconnected, work))
    return Response(body, media_type="application/json")


@router.get("/v1/subjects/{subject_id}/view", response_model=ViewOut)
async def get_view(
    request: Request,
    subject_id: str,
    credentials: ViewReader,
    params: Annotated[ViewParams, Query()],
) -> Response:
    """The subject's view for ``purpose``. Unknown and non-consenting subjects get the same
    default view (``personalised: false``). ``include=recent_events`` adds the latest permitted
    events; ``explain=true`` (privacy, admin) lists what was left out and why."""
    settings = get_runtime(request).settings
    ask = partial(service.query, settings, params.purpose, params.include or [], params.explain, params.limit)
    return await _respond(request, credentials, ask, subject_id, None)


@router.post("/v1/views", response_model=ViewOut)
async def post_view(request: Request, body: ViewIn, credentials: ViewReader) -> Response:
    """The same view, naming the person by identifiers (kept out of URLs) or subject id."""
    ask = partial(service.query, get_runtime(request).settings, body.purpose, body.include, body.explain, None)
    identifiers = body.identifiers.present() if body.identifiers is not None else None
    return await _respond(request, credentials, ask, body.subject_id, identifiers)
