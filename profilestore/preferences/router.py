"""Declared preferences API."""

from __future__ import annotations

from fastapi import APIRouter, Response

from profilestore.auth.dependencies import Collector
from profilestore.deps import SettingsDep, VaultDep, WriteSession
from profilestore.kit import idempotency
from profilestore.kit.time import utcnow
from profilestore.preferences import intake
from profilestore.preferences.schemas import PreferencesIn, PreferencesStored

router = APIRouter(tags=["preferences"])


@router.post("/v1/preferences", status_code=201)
def post_preferences(
    body: PreferencesIn,
    response: Response,
    session: WriteSession,
    vault: VaultDep,
    settings: SettingsDep,
    caller: Collector,
    idempotency_key: idempotency.KeyHeader = None,
) -> PreferencesStored:
    """Store declared preferences whose category a purpose in force may use; count the rest as
    dropped. Unknown people are not created: without consent there is nothing to store. With
    ``Idempotency-Key``, a retry returns the first answer and writes nothing."""

    def store() -> PreferencesStored:
        return intake.declare(session, vault, settings, body, client_id=caller.client_id, now=utcnow())

    payload = body.model_dump(mode="json")
    answer, replayed = idempotency.once(session, caller.client_id, idempotency_key, payload, store, PreferencesStored)
    if replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return answer
