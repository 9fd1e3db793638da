"""Consent API: record decisions, read a subject's state and history, verify the ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from profilestore.auth.dependencies import Collector, Privacy
from profilestore.consent import service
from profilestore.consent.schemas import ConsentIn, ConsentReceipt, ConsentsOut
from profilestore.deps import ReadSession, SettingsDep, VaultDep, WriteSession
from profilestore.identity import service as identity
from profilestore.kit import idempotency
from profilestore.kit.chain import Verification
from profilestore.kit.errors import NotFound
from profilestore.kit.openapi import errors
from profilestore.kit.time import utcnow

router = APIRouter(tags=["consent"])

GlobalPrivacyControl = Annotated[str | None, Header(alias="Sec-GPC", max_length=8)]


@router.post("/v1/consents", status_code=201)
def post_consents(
    body: ConsentIn,
    response: Response,
    session: WriteSession,
    vault: VaultDep,
    settings: SettingsDep,
    caller: Collector,
    idempotency_key: idempotency.KeyHeader = None,
    sec_gpc: GlobalPrivacyControl = None,
) -> ConsentReceipt:
    """Record consent decisions and return a receipt. With ``Idempotency-Key``, a retry returns the
    first receipt and writes nothing. ``Sec-GPC: 1`` also records withdrawals of sale/sharing and
    targeted advertising, with source ``gpc``."""
    gpc = (sec_gpc or "").strip() == "1"

    def record() -> ConsentReceipt:
        prepared = service.prepare(session, settings, body, gpc=gpc, now=utcnow())
        subject = identity.resolve(
            session, vault, settings, body.identifiers.present(), client_id=caller.client_id, create=True
        )
        assert subject is not None
        return service.record(
            session,
            subject.cipher(vault),
            prepared,
            lineage=subject.lineage,
            client_id=caller.client_id,
            merged=list(subject.merged),
        )

    payload = {"body": body.model_dump(mode="json"), "gpc": gpc}
    receipt, replayed = idempotency.once(session, caller.client_id, idempotency_key, payload, record, ConsentReceipt)
    if replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return receipt


@router.get("/v1/subjects/{subject_id}/consents", responses=errors({404: "No such subject"}))
def get_consents(subject_id: str, session: WriteSession, vault: VaultDep, caller: Privacy) -> ConsentsOut:
    """Current state per purpose and the full ledger history (evidence decrypted) of a subject."""
    live = identity.current(session, subject_id)
    if live is None:
        raise NotFound("no such subject", field="subject_id")
    lineage = identity.lineage(session, live)
    return service.consents_of(session, vault.cipher(live, lineage), lineage, client_id=caller.client_id)


@router.get("/v1/ledger/verify")
def verify_ledger(session: ReadSession, _: Privacy) -> Verification:
    """Walk the consent ledger's hash chain; ``first_bad`` names the first broken link."""
    return service.verify(session)
