"""Admin API for purposes and their policies, data categories and notices; any client may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from profilestore.auth.dependencies import Admin, AnyClient
from profilestore.deps import ReadSession, SettingsDep, WriteSession
from profilestore.kit.openapi import errors
from profilestore.purposes import service
from profilestore.purposes.schemas import (
    MAX_NOTICE_VERSION,
    CategoryIn,
    CategoryOut,
    NoticeIn,
    NoticeOut,
    NoticeWithText,
    PurposeIn,
    PurposeOut,
)

router = APIRouter(prefix="/v1", tags=["purposes"])


@router.get("/purposes")
def list_purposes(session: ReadSession, _: AnyClient) -> list[PurposeOut]:
    return service.list_purposes(session)


@router.get("/purposes/{key}", responses=errors({404: "No such purpose"}))
def get_purpose(key: str, session: ReadSession, _: AnyClient) -> PurposeOut:
    return service.get_purpose(session, key)


@router.put("/purposes/{key}")
def put_purpose(key: str, body: PurposeIn, session: WriteSession, settings: SettingsDep, _: Admin) -> PurposeOut:
    """Create a custom purpose beneath an existing one, or set a purpose's legal basis, retention,
    consent validity and policy (the categories it may use; a category covers its children)."""
    return service.put_purpose(session, key, body, settings)


@router.get("/categories")
def list_categories(session: ReadSession, _: AnyClient) -> list[CategoryOut]:
    return service.list_categories(session)


@router.put("/categories/{key}", responses=errors({409: "Default categories cannot be changed"}))
def put_category(key: str, body: CategoryIn, session: WriteSession, _: Admin) -> CategoryOut:
    """Add a data category beneath an existing one."""
    return service.put_category(session, key, body)


@router.post(
    "/notices",
    status_code=201,
    responses={
        200: {"model": NoticeOut, "description": "This version was published before, with the same content"},
        **errors({409: "This version was published before, with other content"}),
    },
)
def publish_notice(body: NoticeIn, response: Response, session: WriteSession, caller: Admin) -> NoticeOut:
    """Publish a notice version; the answer carries the SHA-256 of its text. Publishing the same
    version again with the same content answers 200; with other content, 409."""
    notice, created = service.publish_notice(session, body, caller.client_id)
    if not created:
        response.status_code = 200
    return notice


@router.get("/notices")
def list_notices(session: ReadSession, _: AnyClient) -> list[NoticeOut]:
    return service.list_notices(session)


@router.get("/notices/{key}/{version}", responses=errors({404: "No such notice version"}))
def get_notice(
    key: str, version: Annotated[int, Path(ge=1, le=MAX_NOTICE_VERSION)], session: ReadSession, _: AnyClient
) -> NoticeWithText:
    return service.get_notice(session, key, version)
