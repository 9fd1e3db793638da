"""Behavioural event ingest: consent-gated at collection, idempotent by message id, encrypted,
and folded into signals in the same transaction.

An event is stored only if, at collection time, a purpose in force for its subject may use its
data category; it records which purposes allowed it and the subject's grant epoch. Everything
else is dropped and counted by reason — never silently. Malformed input fails the whole request
before anything is written; a dropped event does not fail its batch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from profilestore import metrics
from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.crypto.service import DecryptionError, SubjectCipher, Vault
from profilestore.events.models import Event
from profilestore.identity.schemas import SubjectStatus
from profilestore.kit.bulk import Bulk
from profilestore.kit.errors import InvalidInput, PayloadTooLarge
from profilestore.kit.ids import new_ids
from profilestore.kit.moving import move_subject_rows
from profilestore.kit.sql import rows
from profilestore.purposes import service as purposes
from profilestore.signals import evidence as signal_evidence
from profilestore.signals import service as signals

TABLE = "events"
# Properties as stored (sealed) and measured against the size limit: compact, UTF-8. One encoder
# for every event: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """A validated event, before its subject is known."""

    identifiers: dict[str, str]
    type: str
    properties: dict[str, Any]
    occurred_at: datetime
    message_id: str
    category: str


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch checked and worked out as far as it can be without the database (so, outside the
    writer's turn): each event's properties serialised once (measured, later sealed), its
    identifiers' blind indexes, and what it says to signals."""

    events: Sequence[IncomingEvent]
    payloads: list[bytes]
    evidence: list[signal_evidence.Evidence]
    indexes: Sequence[tuple[bytes, ...]] = ()  # filled in by intake (identity's part)


# How deep an event's properties may nest (the properties object is level 1). No analytics payload
# comes near it; a much deeper one (Python's parser reads about 1,000 levels) was stored, and then
# every view showing the event failed, as no serialiser of ours writes past about 255.
MAX_PROPERTY_DEPTH = 32


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``levels`` deep (``value`` is level 1)."""
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if level > levels:
            return True
        pending.extend((child, level + 1) for child in children)
    return False


def prepare(
    vault: Vault,
    settings: Settings,
    events: Sequence[IncomingEvent],
    *,
    now: datetime,
    field_prefix: str = "events.{index}.",
) -> PreparedBatch:
    """Refuse a batch with anything malformed, naming the first bad field; work out the rest.
    Touches no database (``check_categories`` is the part that needs one)."""
    limits = settings.events
    if len(events) > limits.max_batch_events:
        raise PayloadTooLarge(f"a batch holds at most {limits.max_batch_events} events", field="events")
    latest = now + timedelta(seconds=settings.clock_skew_seconds)
    payloads = []
    for index, event in enumerate(events):
        payload = _JSON.encode(event.properties).encode()
        if len(payload) > limits.max_event_bytes:
            raise PayloadTooLarge(
                f"event properties are {len(payload)} bytes; the limit is {limits.max_event_bytes}",
                field=f"{field_prefix.format(index=index)}properties",
            )
        # At most one bracket per level: only a payload with more brackets than levels allowed can be
        # nested too deep, so the walk is left for those.
        if payload.count(b"{") + payload.count(b"[") > MAX_PROPERTY_DEPTH and _deeper_than(
            event.properties, MAX_PROPERTY_DEPTH
        ):
            raise InvalidInput(
                f"event properties are nested more than {MAX_PROPERTY_DEPTH} levels deep",
                field=f"{field_prefix.format(index=index)}properties",
            )
        if event.occurred_at > latest:
            raise InvalidInput("occurred_at is in the future", field=f"{field_prefix.format(index=index)}occurred_at")
        payloads.append(payload)
    reader = signal_evidence.EvidenceReader(vault, settings.signals, now)
    evidence = [reader.read(e.type, e.occurred_at, e.properties) for e in events]
    return PreparedBatch(events, payloads, evidence)


def check_categories(session: Session, batch: PreparedBatch, *, field_prefix: str = "events.{index}.") -> None:
    """Refuse a batch naming a data category the taxonomy does not have."""
    known = purposes.known_categories(session, {e.category for e in batch.events})
    for index, event in enumerate(batch.events):
        if event.category not in known:
            raise InvalidInput(
                f"unknown data category '{event.category}'", field=f"{field_prefix.format(index=index)}category"
            )


def default_category(settings: Settings, event_type: str) -> str:
    return settings.events.default_categories.get(event_type, settings.events.fallback_category)


@dataclass
class Admission:
    """A batch after the consent gate: what may be stored, and what was dropped and why."""

    report: IngestReport
    admitted: list[tuple[int, str, list[str]]]  # (event index, subject id, purposes that allow it)
    gates: dict[str, consent.CollectionGate]


def admit(
    session: Session,
    events: Sequence[IncomingEvent],
    subjects: Sequence[tuple[str, str] | None],
    *,
    now: datetime,
) -> Admission:
    """Apply the consent gate. ``subjects[i]`` is (subject id, status) of ``events[i]``, or None
    when nobody known has those identifiers. Writes nothing."""
    report = IngestReport()
    gates = consent.collection_gates(session, sorted({s[0] for s in subjects if s}), now)
    admitted: list[tuple[int, str, list[str]]] = []
    seen: set[tuple[str, str]] = set()
    for index, (event, subject) in enumerate(zip(events, subjects, strict=True)):
        if subject is None:
            report.dropped["no_consent"] += 1
            continue
        subject_id, status = subject
        if status == SubjectStatus.restricted:
            report.dropped["restricted"] += 1
            continue
        allowed = gates[subject_id].allowing(event.category)
        if not allowed:
            report.dropped["no_consent"] += 1
            continue
        if (subject_id, event.message_id) in seen:
            report.duplicates += 1
            continue
        seen.add((subject_id, event.message_id))
        admitted.append((index, subject_id, allowed))
    return Admission(report, admitted, gates)


@dataclass
class Staged:
    """A batch's rows worked out and sealed, ready to write: left to decide when writing is only
    which message ids are new (``write``)."""

    report: IngestReport  # the gate's drops and in-batch repeats
    # (subject, message id) → the event id made for it, in that order: the order of the unique
    # index, in which two writers of the same messages on PostgreSQL meet them
    event_ids: dict[tuple[str, str], str]
    # (subject, message id) → (category, epoch, evidence): to count again after repeats
    evidence: dict[tuple[str, str], tuple[str, datetime, signal_evidence.Evidence]]
    sealed_values: dict[tuple[str, str, bytes], bytes]  # the signal values sealed (SignalWriter.sealed)
    ciphers: dict[str, SubjectCipher]
    # The rows as the driver's parameters for ``dialect``, converted before the transaction.
    dialect: Dialect
    client_id: str
    event_params: list[Any]  # the event rows' parameters, in ``event_ids`` order
    signals: signals.Prepared


def stage(
    vault: Vault,
    settings: Settings,
    batch: PreparedBatch,
    admission: Admission,
    *,
    client_id: str,
    now: datetime,
    dialect: Dialect,
) -> Staged:
    """Seal the admitted events and the signals they feed, as parameters for ``dialect``. Reads
    only the key store."""
    subjects = {sid for _, sid, _ in admission.admitted}
    ciphers = vault.ciphers({sid: () for sid in subjects}) if subjects else {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    evidence: dict[tuple[str, str], tuple[str, datetime, signal_evidence.Evidence]] = {}
    writer = signals.SignalWriter(settings.signals, now)
    for (index, subject_id, allowed), event_id in zip(
        admission.admitted, new_ids("evt", len(admission.admitted)), strict=True
    ):
        event = batch.events[index]
        epoch = admission.gates[subject_id].epoch
        key = (subject_id, event.message_id)
        rows[key] = {
            "subject_id": subject_id,
            "occurred_at": event.occurred_at,
            "event_id": event_id,
            "client_id": client_id,
            "message_id": event.message_id,
            "type": event.type,
            "category": event.category,
            "received_at": now,
            "epoch": epoch,
            "purposes": allowed,
            "properties_ct": _seal(ciphers[subject_id], event_id, batch.payloads[index]),
        }
        evidence[key] = (event.category, epoch, batch.evidence[index])
        writer.add(subject_id, event.category, epoch, batch.evidence[index])
    ordered = sorted(rows)
    report = IngestReport(0, admission.report.duplicates, Counter(admission.report.dropped))
    return Staged(
        report,
        {key: rows[key]["event_id"] for key in ordered},
        evidence,
        writer.sealed,
        ciphers,
        dialect,
        client_id,
        _INSERT_EVENTS.params(dialect, [rows[key] for key in ordered]),
        writer.prepare(ciphers, dialect),
    )


def write(session: Session, settings: Settings, staged: Staged, *, now: datetime) -> IngestReport:
    """Store the staged events whose message ids are new from this client for their subjects,
    and their signals."""
    if session.get_bind().dialect.name != staged.dialect.name:  # staged for another database
        raise ValueError("a batch staged for one database cannot be written to another")
    report = staged.report
    stored = _store_new(session, staged)
    prepared = staged.signals
    if len(stored) < len(staged.event_ids):  # repeats of earlier batches: not counted again
        writer = signals.SignalWriter(settings.signals, now, sealed=staged.sealed_values)
        for subject_id, message_id in stored:
            writer.add(subject_id, *staged.evidence[subject_id, message_id])
        prepared = writer.prepare(staged.ciphers, staged.dialect)
    signals.write(session, prepared)
    report.duplicates += len(staged.event_ids) - len(stored)
    report.accepted = len(stored)
    _count(report)
    return report


def _seal(cipher: SubjectCipher, event_id: str, payload: bytes) -> bytes:
    return cipher.encrypt(TABLE, "properties", event_id, payload)


def encrypt_properties(cipher: SubjectCipher, event_id: str, properties: dict[str, Any]) -> bytes:
    """Properties sealed exactly as ingest stores them."""
    return _seal(cipher, event_id, _JSON.encode(properties).encode())


def decrypt_properties(cipher: SubjectCipher, event_id: str, blob: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(cipher.decrypt(TABLE, "properties", event_id, blob))
    return value


_EVENTS = cast(Table, Event.__table__)
# A repeat of a stored (subject, client, message id) meets the unique index and is skipped.
_INSERT_EVENTS = Bulk(
    lambda dialect: (pg_insert if dialect == "postgresql" else sqlite_insert)(_EVENTS).on_conflict_do_nothing()
)
_STORED_AMONG = select(_EVENTS.c.event_id).where(
    _EVENTS.c.subject_id.in_(bindparam("subject_ids", expanding=True)),
    _EVENTS.c.client_id == bindparam("client_id"),
    _EVENTS.c.message_id.in_(bindparam("message_ids", expanding=True)),
)


def _store_new(session: Session, staged: Staged) -> list[tuple[str, str]]:
    """Insert the staged events; returns the (subject, message id) of those stored, not repeats
    of ones stored before (a concurrent writer of the same message on PostgreSQL waits for the
    other transaction, then finds it taken)."""
    if not staged.event_ids:
        return []
    written = _INSERT_EVENTS.execute_params(session, staged.event_params)
    if written == len(staged.event_ids):  # the usual case: no repeats, nothing more to ask
        return list(staged.event_ids)
    # Some were there already: an event is ours if it holds the event id this batch made.
    ours = {event_id: key for key, event_id in staged.event_ids.items()}
    params = {
        "subject_ids": sorted({subject_id for subject_id, _ in staged.event_ids}),
        "client_id": staged.client_id,
        "message_ids": sorted({message_id for _, message_id in staged.event_ids}),
    }
    return [ours[event_id] for (event_id,) in rows(session, _STORED_AMONG, params) if event_id in ours]


def rebuild_signals(
    session: Session,
    vault: Vault,
    settings: Settings,
    subject_id: str,
    now: datetime,
    buckets: set[tuple[str, datetime]] | None = None,
) -> int:
    """Recompute a subject's signals from the events it still has: the given (category, epoch)
    buckets, or all of them. Returns the number of buckets rebuilt."""
    e = Event.__table__.c
    if buckets is None:
        buckets = {
            (c, epoch)
            for c, epoch in session.execute(select(e.category, e.epoch).where(e.subject_id == subject_id).distinct())
        }
        signals.forget(session, subject_id)
    else:
        signals.forget(session, subject_id, buckets)
    if buckets:
        cipher = vault.cipher(subject_id)
        reader = signal_evidence.EvidenceReader(vault, settings.signals, now)
        writer = signals.SignalWriter(settings.signals, now)
        remaining = session.execute(
            select(e.event_id, e.type, e.category, e.epoch, e.occurred_at, e.properties_ct).where(
                e.subject_id == subject_id, tuple_(e.category, e.epoch).in_(sorted(buckets))
            )
        )
        for event_id, kind, category, epoch, occurred_at, blob in remaining:
            try:
                properties = decrypt_properties(cipher, event_id, blob)
            except DecryptionError:
                continue  # its key is gone (an erasure in progress): nothing to count
            writer.add(subject_id, category, epoch, reader.read(kind, occurred_at, properties))
        writer.flush(session, {subject_id: cipher})
    signals.recount(session, settings.signals, [subject_id], now)
    return len(buckets)


def _count(report: IngestReport) -> None:
    if report.accepted:
        metrics.EVENTS.labels("accepted", "").inc(report.accepted)
    if report.duplicates:
        metrics.EVENTS.labels("duplicate", "").inc(report.duplicates)
    for reason, n in report.dropped.items():
        metrics.EVENTS.labels("dropped", reason).inc(n)


def absorb(session: Session, source: SubjectCipher, target: SubjectCipher) -> set[tuple[str, datetime]]:
    """Merge: the merged subject's events move to the survivor, re-encrypted under its key.

    A message the survivor already holds from the same client was stored for both people: the
    survivor's copy stays. Returns the (category, epoch) buckets of the copies dropped, whose
    signals the survivor must count again from its events (``rebuild_signals``), since the merged
    subject's signals, which counted them, are added to the survivor's."""
    held = select(Event.client_id, Event.message_id).where(Event.subject_id == target.subject_id)
    repeats = session.scalars(
        select(Event).where(Event.subject_id == source.subject_id, tuple_(Event.client_id, Event.message_id).in_(held))
    ).all()
    for event in repeats:
        session.delete(event)
    session.flush()
    move_subject_rows(session, Event, source, target, table=TABLE, column="properties_ct", row_key=lambda e: e.event_id)
    return {(event.category, event.epoch) for event in repeats}


@lru_cache(maxsize=256)
def _recent_statement(categories: frozenset[str]) -> Select[Any]:
    e = Event.__table__.c
    return (
        select(e.event_id, e.type, e.category, e.occurred_at, e.properties_ct)
        .where(e.subject_id == bindparam("subject_id"), signals.admitted(e.category, e.epoch, categories))
        .order_by(e.occurred_at.desc())
        .limit(bindparam("limit"))
    )


def recent(session: Session, cipher: SubjectCipher, permitted: signals.Permitted, limit: int) -> list[dict[str, Any]]:
    """The subject's ``limit`` most recent events that ``permitted`` admits, newest first."""
    params = {"subject_id": cipher.subject_id, "limit": limit, **permitted.params}
    stored = rows(session, _recent_statement(permitted.categories), params)
    found = []
    for event_id, kind, category, occurred_at, blob in stored:
        properties = decrypt_properties(cipher, event_id, blob)
        found.append({"type": kind, "category": category, "occurred_at": occurred_at, "properties": properties})
    return found
