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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from profilestore import metrics
from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.crypto.service import SubjectCipher, Vault
from profilestore.events.models import Event, EventReceipt
from profilestore.kit.errors import InvalidInput, PayloadTooLarge
from profilestore.kit.ids import new_id
from profilestore.kit.moving import move_subject_rows
from profilestore.purposes import service as purposes
from profilestore.signals import service as signals

TABLE = "events"


@dataclass(frozen=True)
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


def validate(
    session: Session,
    settings: Settings,
    events: Sequence[IncomingEvent],
    *,
    now: datetime,
    field_prefix: str = "events.{index}.",
) -> None:
    """Refuse a batch with anything malformed, naming the first bad field. Writes nothing."""
    limits = settings.events
    if len(events) > limits.max_batch_events:
        raise PayloadTooLarge(f"a batch holds at most {limits.max_batch_events} events", field="events")
    latest = now + timedelta(seconds=settings.clock_skew_seconds)
    for index, event in enumerate(events):
        prefix = field_prefix.format(index=index)
        size = len(json.dumps(event.properties, separators=(",", ":"), ensure_ascii=False, default=str).encode())
        if size > limits.max_event_bytes:
            raise PayloadTooLarge(
                f"event properties are {size} bytes; the limit is {limits.max_event_bytes}", field=f"{prefix}properties"
            )
        if event.occurred_at > latest:
            raise InvalidInput("occurred_at is in the future", field=f"{prefix}occurred_at")
    categories = sorted({e.category for e in events})
    known = {c.key for c in purposes.list_categories(session)} if categories else set()
    for index, event in enumerate(events):
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


def store(
    session: Session,
    vault: Vault,
    settings: Settings,
    events: Sequence[IncomingEvent],
    admission: Admission,
    *,
    client_id: str,
    now: datetime,
) -> IngestReport:
    """Store the admitted events (once per message id), encrypted, and fold them into signals."""
    report = admission.report
    chosen = [(events[i], sid, allowed) for i, sid, allowed in admission.admitted]
    fresh = _claim_message_ids(session, client_id, chosen, now)
    ciphers = vault.ciphers({sid: () for sid in {sid for _, sid, _ in chosen}}) if chosen else {}
    rows = []
    writer = signals.SignalWriter(vault, settings.signals, now)
    for event, subject_id, allowed in chosen:
        event_id = fresh.get(event.message_id)
        if event_id is None:
            report.duplicates += 1
            continue
        epoch = admission.gates[subject_id].epoch
        rows.append(
            {
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
                "properties_ct": encrypt_properties(ciphers[subject_id], event_id, event.properties),
            }
        )
        writer.add_event(subject_id, event.category, epoch, event.type, event.occurred_at, event.properties)
    if rows:
        session.execute(insert(Event), rows)
        writer.flush(session, ciphers)
    report.accepted = len(rows)
    _count(report)
    return report


def encrypt_properties(cipher: SubjectCipher, event_id: str, properties: dict[str, Any]) -> bytes:
    payload = json.dumps(properties, separators=(",", ":"), default=str).encode()
    return cipher.encrypt(TABLE, "properties", event_id, payload)


def decrypt_properties(cipher: SubjectCipher, event_id: str, blob: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(cipher.decrypt(TABLE, "properties", event_id, blob))
    return value


def _claim_message_ids(
    session: Session, client_id: str, admitted: list[tuple[IncomingEvent, str, list[str]]], now: datetime
) -> dict[str, str]:
    """Record the message ids of the events about to be stored; returns message id → event id for
    the ones not seen before from this client (a concurrent duplicate waits, then loses)."""
    if not admitted:
        return {}
    wanted = {event.message_id: (new_id("evt"), sid) for event, sid, _ in admitted}
    insert_ = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    claimed = session.execute(
        insert_(EventReceipt).on_conflict_do_nothing().returning(EventReceipt.message_id),
        [
            {"client_id": client_id, "message_id": m, "subject_id": sid, "event_id": eid, "received_at": now}
            for m, (eid, sid) in wanted.items()
        ],
    )
    return {m: wanted[m][0] for m in claimed.scalars()}


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


def recent(
    session: Session, cipher: SubjectCipher, admits: Callable[[str, datetime], bool], limit: int
) -> list[dict[str, Any]]:
    """The subject's most recent events that ``admits(category, epoch)`` allows, newest first."""
    found: list[dict[str, Any]] = []
    rows = session.execute(
        select(Event.event_id, Event.type, Event.category, Event.epoch, Event.occurred_at, Event.properties_ct)
        .where(Event.subject_id == cipher.subject_id)
        .order_by(Event.occurred_at.desc())
        .execution_options(yield_per=200)
    )
    for r in rows:
        if admits(r.category, r.epoch):
            properties = decrypt_properties(cipher, r.event_id, r.properties_ct)
            found.append(
                {"type": r.type, "category": r.category, "occurred_at": r.occurred_at, "properties": properties}
            )
            if len(found) >= limit:
                break
    return found
