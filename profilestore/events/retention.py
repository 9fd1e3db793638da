"""``profilestore purge``: retention for behavioural events.

An event is kept while at least one purpose that allowed it is still in force *under the grant
it was collected under* (its epoch is not older than that grant's epoch) and the event is within
that purpose's retention. Everything else is deleted, and the signal buckets it fed are rebuilt
from the events that remain, so scores never keep evidence that is gone.

Safe beside running services: each subject is purged in its own short transaction, holding the
same per-subject lock that ingest takes to write signals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.crypto.service import Vault
from profilestore.events.models import Event
from profilestore.events.service import rebuild_signals
from profilestore.purposes import service as purposes
from profilestore.signals import service as signals


@dataclass
class PurgeReport:
    subjects: int = 0
    deleted: Counter[str] = field(default_factory=Counter)  # reason → events
    signal_buckets_rebuilt: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "subjects": self.subjects,
            "events_deleted": dict(self.deleted),
            "signal_buckets_rebuilt": self.signal_buckets_rebuilt,
        }


def _collected_under(event: Event, verdict: consent.Effective) -> bool:
    """Whether the event was collected during the grant that keeps the purpose in force now."""
    return verdict.grant_epoch is None or event.epoch >= verdict.grant_epoch


def _verdict(
    event: Event, in_force: dict[str, consent.Effective], retention: dict[str, int], now: datetime
) -> str | None:
    """None to keep the event, else why it goes (``withdrawn_or_expired`` or ``retention``)."""
    under_grant = [p for p in event.purposes if p in in_force and _collected_under(event, in_force[p])]
    if not under_grant:
        return "withdrawn_or_expired"
    if all(event.occurred_at < now - timedelta(days=retention.get(p, 0)) for p in under_grant):
        return "retention"
    return None


def purge_subject(session: Session, vault: Vault, settings: Settings, subject_id: str, now: datetime) -> PurgeReport:
    report = PurgeReport(subjects=1)
    signals.lock_subjects(session, [subject_id])
    in_force = consent.in_force(session, subject_id, now)
    retention = {key: rule.retention_days for key, rule in purposes.rules(session).items()}
    rows = session.scalars(select(Event).where(Event.subject_id == subject_id)).all()
    doomed = []
    for event in rows:
        reason = _verdict(event, in_force, retention, now)
        if reason:
            report.deleted[reason] += 1
            doomed.append(event)
    if not doomed:
        return report
    keys = [(e.subject_id, e.occurred_at, e.event_id) for e in doomed]
    for chunk in range(0, len(keys), 500):
        part = keys[chunk : chunk + 500]
        session.execute(delete(Event).where(tuple_(Event.subject_id, Event.occurred_at, Event.event_id).in_(part)))
    buckets = {(e.category, e.epoch) for e in doomed}
    report.signal_buckets_rebuilt = rebuild_signals(session, vault, settings, subject_id, now, buckets)
    return report


def purge(
    transaction: Callable[[], AbstractContextManager[Session]],
    vault: Vault,
    settings: Settings,
    now: datetime,
    subject_ids: list[str],
) -> PurgeReport:
    """Purge every subject in ``subject_ids``, one transaction each (``transaction()`` opens one)."""
    total = PurgeReport()
    for subject_id in subject_ids:
        with transaction() as session:
            part = purge_subject(session, vault, settings, subject_id, now)
        total.subjects += 1
        total.deleted.update(part.deleted)
        total.signal_buckets_rebuilt += part.signal_buckets_rebuilt
    return total


def subjects_with_events(session: Session) -> list[str]:
    return list(session.scalars(select(Event.subject_id).distinct().order_by(Event.subject_id)))
