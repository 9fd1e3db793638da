"""One event batch, from identifiers to stored rows: the order of steps that both the native and
the Segment endpoints follow.

1. look the batch's people up, writing nothing;
2. apply the consent gate — a dropped event leaves nothing behind, not even an identifier link;
3. for admitted events whose identifiers are new or span two subjects, link them (attach, merge),
   then look up and gate again: a link can make later events of the same batch known;
4. store what is admitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.crypto.service import Vault
from profilestore.events import service as events
from profilestore.identity import service as identity

MAX_LINK_ROUNDS = 5  # each round can only make more of the batch known; a handful always suffices


def ingest(
    session: Session,
    vault: Vault,
    settings: Settings,
    incoming: Sequence[events.IncomingEvent],
    *,
    client_id: str,
    now: datetime,
    field_prefix: str = "events.{index}.",
) -> events.IngestReport:
    """Gate, link and store a validated batch (see ``events.service.validate``)."""
    identifier_sets = [e.identifiers for e in incoming]
    linked: set[tuple[tuple[str, str], ...]] = set()
    for _ in range(MAX_LINK_ROUNDS):
        known = identity.lookup_known(session, vault, settings, identifier_sets, field_prefix=field_prefix)
        subjects = [(k.subject_id, k.status) if k else None for k in known]
        admission = events.admit(session, incoming, subjects, now=now)
        pending = []
        for index, _, _ in admission.admitted:
            found = known[index]
            key = tuple(sorted(identifier_sets[index].items()))
            if found is not None and not found.complete and key not in linked:
                linked.add(key)
                pending.append(identifier_sets[index])
        if not pending:
            break
        for identifiers in pending:
            identity.link(session, vault, settings, identifiers, client_id=client_id)
    return events.store(session, vault, settings, incoming, admission, client_id=client_id, now=now)
