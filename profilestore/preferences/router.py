"""Declared preferences API."""

from __future__ import annotations

from fastapi import APIRouter, Response

from profilestore.auth.dependencies import Collector
from profilestore.consent import service as consent
from profilestore.deps import SettingsDep, VaultDep, WriteSession
from profilestore.identity import service as identity
from profilestore.kit import idempotency
from profilestore.kit.time import utcnow
from profilestore.preferences import service
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
        prepared = service.prepare(session, settings, body, now=utcnow())
        identifiers = body.identifiers.present()
        # Look before linking: a post of which nothing may be kept links no identifier and merges
        # nobody (linking is processing too; events are gated the same way).
        known = identity.lookup_known(session, vault, settings, [identifiers])[0]
        if known is None:
            return service.nothing_stored(prepared, None)
        allowed = consent.collectable_categories(session, known.subject_id)
        if not service.admitted(prepared, known.status, allowed):
            return service.nothing_stored(prepared, known.subject_id)
        subject = identity.resolve(session, vault, settings, identifiers, client_id=caller.client_id, create=False)
        if subject is None:  # gone since the look (PostgreSQL: another transaction)
            return service.nothing_stored(prepared, None)
        # Counted again: merging the subjects the identifiers name may have brought more consent.
        allowed = consent.collectable_categories(session, subject.subject_id)
        return service.store(
            session, subject.cipher(vault), prepared, known.status, allowed, client_id=caller.client_id
        )

    payload = body.model_dump(mode="json")
    answer, replayed = idempotency.once(session, caller.client_id, idempotency_key, payload, store, PreferencesStored)
    if replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return answer
