"""Taking in a post of declared preferences: who it is about, what their consent lets us keep.

Composes identity, consent and ``preferences.service`` (which identity's merges import, so it
cannot import identity back). The person is looked up before anything is linked: a post of which
nothing may be kept links no identifier and merges nobody (linking is processing too; event
batches are gated the same way, in ``events.intake``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.crypto.service import Vault
from profilestore.identity import service as identity
from profilestore.preferences import service
from profilestore.preferences.schemas import PreferencesIn, PreferencesStored


def declare(
    session: Session, vault: Vault, settings: Settings, body: PreferencesIn, *, client_id: str, now: datetime
) -> PreferencesStored:
    """Store the preferences a purpose in force for the person may use; count the rest as dropped.
    Unknown people are not created: without consent there is nothing to store."""
    prepared = service.prepare(session, settings, body, now=now)
    identifiers = body.identifiers.present()
    known = identity.lookup_known(session, vault, settings, [identifiers])[0]
    if known is None:
        return service.nothing_stored(prepared, None)
    kept = service.admitted(prepared, known.status, consent.collectable_categories(session, known.subject_id))
    if not kept:
        return service.nothing_stored(prepared, known.subject_id)
    subject = identity.resolve(session, vault, settings, identifiers, client_id=client_id, create=False)
    if subject is None:  # gone since the look (PostgreSQL: another transaction)
        return service.nothing_stored(prepared, None)
    if subject.merged:  # the people merged in may have brought more consent, or a restriction
        _, status = identity.live_status(session, subject.subject_id) or (None, known.status)
        kept = service.admitted(prepared, status, consent.collectable_categories(session, subject.subject_id))
    return service.store(session, subject.cipher(vault), prepared, kept, client_id=client_id)
