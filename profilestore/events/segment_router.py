"""The Segment Tracking API: /v1/batch, /v1/track, /v1/page, /v1/screen, /v1/identify, /v1/alias,
/v1/group. Write key as the HTTP Basic user; gzip bodies accepted; Segment's limits (32 KB per
call, 500 KB per batch) apply to the decompressed body too."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from profilestore.auth.dependencies import WriteKey
from profilestore.deps import SettingsDep, VaultDep, WriteSession, get_runtime
from profilestore.events import segment
from profilestore.events.segment_schemas import SegmentAnswer, SegmentBatch, SegmentCall, SegmentMessage
from profilestore.kit.errors import InvalidInput, PayloadTooLarge
from profilestore.kit.http import unparsable_body
from profilestore.kit.openapi import json_body
from profilestore.kit.time import utcnow

router = APIRouter(tags=["segment"])

SINGLE_CALLS = ("track", "page", "screen", "identify", "alias", "group")


def body_limit(request: Request) -> int:
    events = get_runtime(request).settings.events
    return events.segment_max_batch_bytes if request.url.path == "/v1/batch" else events.max_event_bytes


async def _payload(request: Request) -> Any:
    """The JSON body, gunzipped if sent so (never inflated past the route's limit)."""
    raw = await request.body()
    limit = body_limit(request)
    if request.headers.get("content-encoding", "").strip().lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise InvalidInput("body is not valid gzip", field="body") from exc
        if len(raw) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body is larger than {limit} bytes", field="body")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8 or not JSON (both ValueErrors), or too deep
        raise unparsable_body(exc) from None


# Routes list it after their guard: dependencies run in order, and the key is judged first.
Payload = Annotated[Any, Depends(_payload)]


def _parse(model: type[SegmentBatch] | type[SegmentMessage], payload: Any) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def _run(
    messages: list[SegmentMessage],
    request: Request,
    session: WriteSession,
    vault: VaultDep,
    settings: SettingsDep,
    client_id: str,
) -> SegmentAnswer:
    gpc = request.headers.get("sec-gpc", "").strip() == "1"
    report = segment.process(session, vault, settings, messages, client_id=client_id, gpc=gpc, now=utcnow())
    return SegmentAnswer(
        success=True, accepted=report.accepted, duplicates=report.duplicates, dropped=dict(report.dropped)
    )


@router.post("/v1/batch", openapi_extra=json_body(SegmentBatch))
def batch(
    caller: WriteKey, payload: Payload, request: Request, session: WriteSession, vault: VaultDep, settings: SettingsDep
) -> SegmentAnswer:
    """A batch of Segment messages (as SDKs flush them)."""
    parsed: SegmentBatch = _parse(SegmentBatch, payload)
    # The batch's context and sentAt apply to messages that carry none of their own.
    shared = {"context": parsed.context, "sentAt": parsed.sentAt}
    messages = []
    for message in parsed.batch:
        missing = {name: value for name, value in shared.items() if value and not getattr(message, name)}
        messages.append(message.model_copy(update=missing) if missing else message)
    return _run(messages, request, session, vault, settings, caller.client_id)


def _single_call(kind: str) -> Callable[..., SegmentAnswer]:
    def handler(
        caller: WriteKey,
        payload: Payload,
        request: Request,
        session: WriteSession,
        vault: VaultDep,
        settings: SettingsDep,
    ) -> SegmentAnswer:
        if not isinstance(payload, dict):
            raise InvalidInput("body must be a JSON object", field="body")
        message: SegmentMessage = _parse(SegmentMessage, {**payload, "type": kind})
        return _run([message], request, session, vault, settings, caller.client_id)

    handler.__name__ = f"segment_{kind}"
    handler.__doc__ = f"A single Segment `{kind}` call."
    return handler


for _kind in SINGLE_CALLS:
    router.add_api_route(
        f"/v1/{_kind}",
        _single_call(_kind),
        methods=["POST"],
        response_model=SegmentAnswer,
        openapi_extra=json_body(SegmentCall),
    )
