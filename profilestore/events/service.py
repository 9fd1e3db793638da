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
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from profilestore import metrics
from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.crypto.service import DecryptionError, SubjectCipher, Vault
from profilestore.events.models import Event, EventReceipt
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
    seen: set[str] = set()
    for index, (event, subject) in enumerate(zip(events, subjects, strict=True)):
        if subject is None:
            report.dropped["no_consent"] += 1
            continue
        subject_id, status = subject
        if status == "restricted":
            report.dropped["restricted"] += 1
            continue
        allowed = gates[subject_id].allowing(event.category)
        if not allowed:
            report.dropped["no_consent"] += 1
            continue
        if event.message_id in seen:
            report.duplicates += 1
            continue
        seen.add(event.message_id)
        admitted.append((index, subject_id, allowed))
    return Admission(report, admitted, gates)


@dataclass
class Staged:
    """A batch's rows worked out and sealed, ready to write: left to decide when writing is only
    which message ids are new (``write``)."""

    report: IngestReport  # the gate's drops and in-batch repeats
    receipts: list[dict[str, Any]]  # in message-id order (two writers on PostgreSQL meet them in one order)
    # message id → (subject, category, epoch, evidence): to count again after dropping repeats
    evidence: dict[str, tuple[str, str, datetime, signal_evidence.Evidence]]
    sealed_values: dict[tuple[str, str, bytes], bytes]  # the signal values sealed (SignalWriter.sealed)
    signal_rows: list[dict[str, Any]]
    ciphers: dict[str, SubjectCipher]
    # The rows as the driver's parameters for ``dialect``, converted before the transaction.
    dialect: Dialect
    receipt_params: list[Any]
    event_params: dict[str, Any]  # message id → the event row's parameters
    signal_params: list[Any]


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
    receipts: list[dict[str, Any]] = []
    rows: dict[str, dict[str, Any]] = {}
    evidence: dict[str, tuple[str, str, datetime, signal_evidence.Evidence]] = {}
    writer = signals.SignalWriter(settings.signals, now)
    for (index, subject_id, allowed), event_id in zip(
        admission.admitted, new_ids("evt", len(admission.admitted)), strict=True
    ):
        event = batch.events[index]
        epoch = admission.gates[subject_id].epoch
        receipts.append(
            {
                "client_id": client_id,
                "message_id": event.message_id,
                "subject_id": subject_id,
                "event_id": event_id,
                "received_at": now,
            }
        )
        rows[event.message_id] = {
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
        evidence[event.message_id] = (subject_id, event.category, epoch, batch.evidence[index])
        writer.add(subject_id, event.category, epoch, batch.evidence[index])
    receipts.sort(key=itemgetter("message_id"))
    report = IngestReport(0, admission.report.duplicates, Counter(admission.report.dropped))
    signal_rows = writer.rows(ciphers)
    return Staged(
        report,
        receipts,
        evidence,
        writer.sealed,
        signal_rows,
        ciphers,
        dialect,
        _CLAIM.params(dialect, receipts),
        dict(zip(rows, _INSERT_EVENTS.params(dialect, list(rows.values())), strict=True)),
        signals.write_params(dialect, settings.signals, signal_rows),
    )


def write(session: Session, settings: Settings, staged: Staged, *, now: datetime) -> IngestReport:
    """Store the staged events whose message ids are new from this client, and their signals."""
    if session.get_bind().dialect.name != staged.dialect.name:  # staged for another database
        raise ValueError("a batch staged for one database cannot be written to another")
    report = staged.report
    claimed = _claim(session, staged)
    event_params = [params for message_id, params in staged.event_params.items() if message_id in claimed]
    signal_rows, signal_params = staged.signal_rows, staged.signal_params
    if len(event_params) < len(staged.event_params):  # repeats of earlier batches: not counted again
        writer = signals.SignalWriter(settings.signals, now, sealed=staged.sealed_values)
        for message_id in claimed:
            writer.add(*staged.evidence[message_id])
        signal_rows = writer.rows(staged.ciphers)
        signal_params = signals.write_params(staged.dialect, settings.signals, signal_rows)
    _INSERT_EVENTS.execute_params(session, event_params)
    signals.write(session, settings.signals, signal_rows, signal_params)
    report.duplicates += len(staged.event_params) - len(event_params)
    report.accepted = len(event_params)
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


_INSERT_EVENTS = Bulk(lambda _: insert(cast(Table, Event.__table__)))
_RECEIPTS = cast(Table, EventReceipt.__table__)
_CLAIM = Bulk(
    lambda dialect: (pg_insert if dialect == "postgresql" else sqlite_insert)(_RECEIPTS).on_conflict_do_nothing()
)
_CLAIMED_BY = select(_RECEIPTS.c.message_id, _RECEIPTS.c.event_id).where(
    _RECEIPTS.c.client_id == bindparam("client_id"),
    _RECEIPTS.c.message_id.in_(bindparam("message_ids", expanding=True)),
)


def _claim(session: Session, staged: Staged) -> set[str]:
    """Record the staged receipts; returns the message ids that were new from this client (a
    concurrent sender of the same id waits for the other transaction, then finds it taken)."""
    receipts = staged.receipts
    if not receipts:
        return set()
    written = _CLAIM.execute_params(session, staged.receipt_params)
    if written == len(receipts):  # the usual case: no repeats, nothing more to ask
        return {r["message_id"] for r in receipts}
    # Some were there already: a receipt is ours if it holds the event id this batch made.
    ours = {r["message_id"]: r["event_id"] for r in receipts}
    params = {"client_id": receipts[0]["client_id"], "message_ids": list(ours)}
    return {m for m, event_id in rows(session, _CLAIMED_BY, params) if ours[m] == event_id}


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
    if not buckets:
        return 0
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
    return len(buckets)


def _count(report: IngestReport) -> None:
    if report.accepted:
        metrics.EVENTS.labels("accepted", "").inc(report.accepted)
    if report.duplicates:
        metrics.EVENTS.labels("duplicate", "").inc(report.duplicates)
    for reason, n in report.dropped.items():
        metrics.EVENTS.labels("dropped", reason).inc(n)


def absorb(session: Session, source: SubjectCipher, target: SubjectCipher) -> None:
    """Merge: the merged subject's events move to the survivor, re-encrypted under its key."""
    move_subject_rows(session, Event, source, target, table=TABLE, column="properties_ct", row_key=lambda e: e.event_id)
    receipts = session.scalars(select(EventReceipt).where(EventReceipt.subject_id == source.subject_id)).all()
    for receipt in receipts:
        receipt.subject_id = target.subject_id
    session.flush()


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
