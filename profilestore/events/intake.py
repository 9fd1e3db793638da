"""One event batch, from identifiers to stored rows: the order of steps that both the native and
the Segment endpoints follow.

1. ``prepare``: check the batch and work out everything that needs no database (serialised
   properties, blind indexes, signal evidence) — before the transaction, so outside the writer's
   turn on SQLite;
2. look the batch's people up, writing nothing;
3. apply the consent gate — a dropped event leaves nothing behind, not even an identifier link;
4. for admitted events whose identifiers are new or span two subjects, link them (attach, merge),
   then look up and gate again: a link can make later events of the same batch known;
5. store what is admitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.crypto.service import Vault
from profilestore.events import service as events
from profilestore.identity import service as identity

MAX_LINK_ROUNDS = 5  # each round can only make more of the batch known; a handful always suffices


def prepare(
    vault: Vault,
    settings: Settings,
    incoming: Sequence[events.IncomingEvent],
    *,
    now: datetime,
    field_prefix: str = "events.{index}.",
) -> events.PreparedBatch:
    """Check a batch and work it out as far as it goes without the database; raises on the first
    bad field."""
    batch = events.prepare(vault, settings, incoming, now=now, field_prefix=field_prefix)
    indexes = identity.index_sets(vault, settings, [e.identifiers for e in incoming], field_prefix=field_prefix)
    return replace(batch, indexes=indexes)


def ingest(
    session: Session,
    vault: Vault,
    settings: Settings,
    batch: events.PreparedBatch,
    *,
    client_id: str,
    now: datetime,
    field_prefix: str = "events.{index}.",
) -> events.IngestReport:
    """Gate, link and store a prepared batch."""
    events.check_categories(session, batch, field_prefix=field_prefix)
    linked: set[tuple[bytes, ...]] = set()
    for _ in range(MAX_LINK_ROUNDS):
        known = identity.known_by_indexes(session, batch.indexes)
        subjects = [(k.subject_id, k.status) if k else None for k in known]
        admission = events.admit(session, batch.events, subjects, now=now)
        pending = []
        for index, _, _ in admission.admitted:
            found = known[index]
            if found is not None and not found.complete and batch.indexes[index] not in linked:
                linked.add(batch.indexes[index])
                pending.append(batch.events[index].identifiers)
        if not pending:
            break
        for identifiers in pending:
            identity.link(session, vault, settings, identifiers, client_id=client_id)
    return events.store(session, vault, settings, batch, admission, client_id=client_id, now=now)
