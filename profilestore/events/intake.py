"""One event batch, from identifiers to stored rows: the order of steps that both the native and
the Segment endpoints follow.

1. ``prepare``: check the batch and work out everything that needs no database (serialised
   properties, blind indexes, signal evidence);
2. ``plan``: on a read snapshot, look the batch's people up, apply the consent gate (a dropped
   event leaves nothing behind, not even an identifier link) and seal the rows to write;
3. ``ingest``, in the write transaction: when nothing the plan rests on has changed (the usual
   case), write its rows; otherwise work it out again here — linking identifiers that are new or
   span two subjects (attach, merge), then looking up and gating again, since a link can make
   later events of the same batch known — and write that.

Whether anything changed: on SQLite, triggers on every table the gate reads (``GATED_BY``) move
one counter (``GateGeneration``), which the plan reads in its snapshot and the write transaction
reads again — one number instead of the batch's people. On PostgreSQL, the write transaction
looks them up and gates again, and compares.

On SQLite only step 3 holds the writer lock (see db.py): it reads the counter and writes. The rest
of a batch's work runs beside other writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.crypto.service import Vault
from profilestore.events import service as events
from profilestore.events.models import GateGeneration
from profilestore.identity import service as identity
from profilestore.kit.sql import rows

MAX_LINK_ROUNDS = 5  # each round can only make more of the batch known; a handful always suffices

# The tables the collection gate reads (identity lookup, consent states, purpose rules, the
# taxonomy); on SQLite each has triggers that move the gate generation (migration 0004).
GATED_BY = ("identifiers", "subjects", "consent_state", "purposes", "purpose_categories", "data_categories")
_GENERATION = select(GateGeneration.value).where(GateGeneration.id == 1)


def gate_generation(session: Session) -> int | None:
    """The counter of changes to what the gate reads, on SQLite; None where no triggers keep it."""
    if session.get_bind().dialect.name != "sqlite":
        return None
    return int(rows(session, _GENERATION)[0][0])


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


@dataclass
class Plan:
    """What a batch would write, and the identities and consent that decided it."""

    known: list[identity.Known | None]
    admission: events.Admission
    staged: events.Staged | None  # None when identifiers must be linked first: that writes
    generation: int | None = None  # the gate generation it was worked out at (SQLite)


def _look(
    session: Session, batch: events.PreparedBatch, now: datetime
) -> tuple[list[identity.Known | None], events.Admission]:
    known = identity.known_by_indexes(session, batch.indexes)
    subjects = [(k.subject_id, k.status) if k else None for k in known]
    return known, events.admit(session, batch.events, subjects, now=now)


def _needs_linking(known: Sequence[identity.Known | None], admission: events.Admission) -> bool:
    return any((found := known[i]) is not None and not found.complete for i, _, _ in admission.admitted)


def _stage(
    session: Session,
    vault: Vault,
    settings: Settings,
    batch: events.PreparedBatch,
    known: list[identity.Known | None],
    admission: events.Admission,
    *,
    client_id: str,
    now: datetime,
    generation: int | None = None,
) -> Plan:
    dialect = session.get_bind().dialect
    staged = events.stage(vault, settings, batch, admission, client_id=client_id, now=now, dialect=dialect)
    return Plan(known, admission, staged, generation)


def plan(
    session: Session,
    vault: Vault,
    settings: Settings,
    batch: events.PreparedBatch,
    *,
    client_id: str,
    now: datetime,
    field_prefix: str = "events.{index}.",
) -> Plan:
    """Gate a prepared batch and seal what it would write, reading only (``session`` need not be
    the write transaction)."""
    generation = gate_generation(session)  # first: the snapshot the lookups below read
    events.check_categories(session, batch, field_prefix=field_prefix)
    known, admission = _look(session, batch, now)
    if _needs_linking(known, admission):
        return Plan(known, admission, None, generation)
    return _stage(
        session, vault, settings, batch, known, admission, client_id=client_id, now=now, generation=generation
    )


def ingest(
    session: Session,
    vault: Vault,
    settings: Settings,
    batch: events.PreparedBatch,
    *,
    client_id: str,
    now: datetime,
    field_prefix: str = "events.{index}.",
    planned: Plan | None = None,
) -> events.IngestReport:
    """Gate, link and store a prepared batch in ``session``, the write transaction. ``planned``
    (from ``plan`` on an earlier snapshot) is written as it is when the identities and consent it
    rests on are still those in force; otherwise the batch is worked out again here."""
    if planned is None:
        planned = plan(session, vault, settings, batch, client_id=client_id, now=now, field_prefix=field_prefix)
    elif planned.staged is not None and (planned.generation is None or gate_generation(session) != planned.generation):
        known, admission = _look(session, batch, now)
        if known != planned.known or admission != planned.admission:
            # What the plan saw has changed: start from what is in force now.
            planned = Plan(known, admission, None)
            if not _needs_linking(known, admission):
                planned = _stage(session, vault, settings, batch, known, admission, client_id=client_id, now=now)
    if planned.staged is None:
        planned = _link_then_plan(session, vault, settings, batch, planned, client_id=client_id, now=now)
    assert planned.staged is not None
    return events.write(session, settings, planned.staged, now=now)


def _link_then_plan(
    session: Session,
    vault: Vault,
    settings: Settings,
    batch: events.PreparedBatch,
    planned: Plan,
    *,
    client_id: str,
    now: datetime,
) -> Plan:
    """Link the identifiers of admitted events that are new or span two subjects, look up and
    gate again (a link can make later events of the batch known), until nothing is left to link."""
    linked: set[tuple[bytes, ...]] = set()
    known, admission = planned.known, planned.admission
    for _ in range(MAX_LINK_ROUNDS):
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
        known, admission = _look(session, batch, now)
    return _stage(session, vault, settings, batch, known, admission, client_id=client_id, now=now)
