"""Signals: recency-decayed scores per (subject, dimension, value), kept apart by data category and
grant epoch, updated incrementally as events arrive so that reading a view never re-reads history.

Scores decay exponentially with the configured half-life. A row holds its score as of
``score_at``; adding evidence first decays the stored score to the new reference time. One batch
is aggregated in memory and each signal row is read and written once. On PostgreSQL, writers of
the same subject's signals queue on a transaction-level advisory lock (taken in sorted order, so
two batches can't deadlock); SQLite serialises writers anyway.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from profilestore.config import SignalSettings
from profilestore.crypto.service import SubjectCipher, Vault
from profilestore.purposes.rules import covers
from profilestore.signals.models import Signal
from profilestore.signals.types import Behaviour

TABLE = "signals"
MAX_VALUE_LENGTH = 200
DAY = 86_400.0


def decay(score: float, since: datetime, until: datetime, half_life_days: float) -> float:
    """``score`` held at ``since``, decayed to ``until`` (grows if ``until`` is earlier)."""
    return score * 2.0 ** (-(until - since).total_seconds() / (half_life_days * DAY))


def normalise_value(value: Any) -> str | None:
    """Signal values compare case- and space-insensitively; blanks and non-text are not signals."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text_value = " ".join(str(value).split()).casefold()
    return text_value[:MAX_VALUE_LENGTH] or None


def price_band(price: Any, bands: list[float]) -> str | None:
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
        return None
    lower = 0.0
    for upper in bands:
        if price < upper:
            return f"{lower:g}-{upper:g}"
        lower = upper
    return f"{lower:g}+"


def _lookup(properties: Mapping[str, Any], path: str) -> Any:
    current: Any = properties
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def extract(properties: Mapping[str, Any], settings: SignalSettings) -> list[tuple[str, str]]:
    """(dimension, value) pairs an event's properties speak to, by the configured mapping."""
    found: list[tuple[str, str]] = []
    for dimension, paths in settings.event_dimensions.items():
        for path in paths:
            raw = _lookup(properties, path)
            if raw is None:
                continue
            if dimension == "price_band":
                band = price_band(raw, settings.price_bands)
                if band:
                    found.append((dimension, band))
            else:
                values = raw if isinstance(raw, list) else [raw]
                found.extend((dimension, v) for v in {normalise_value(x) for x in values[:20]} if v)
            break
    return found


def value_index(vault: Vault, dimension: str, value: str) -> bytes:
    return vault.blind_index(f"signal:{dimension}", value)


def row_key(dimension: str, index: bytes, category: str, epoch: datetime) -> str:
    """The associated-data row key of a signal's encrypted value."""
    return f"{dimension}|{index.hex()}|{category}|{epoch.isoformat()}"


@dataclass
class _Pending:
    value: str
    score: float  # as of the writer's reference time
    evidence: int
    last_seen: datetime


@dataclass
class SignalWriter:
    """Collects one batch's evidence, then writes each touched signal row once."""

    vault: Vault
    settings: SignalSettings
    now: datetime
    pending: dict[tuple[str, str, bytes, str, datetime], _Pending] = field(default_factory=dict)

    def add_event(
        self,
        subject_id: str,
        category: str,
        epoch: datetime,
        event_type: str,
        occurred_at: datetime,
        properties: Mapping[str, Any],
    ) -> None:
        weight = self.settings.type_weights.get(event_type, self.settings.default_weight)
        contribution = decay(weight, occurred_at, self.now, self.settings.half_life_days)
        for dimension, value in extract(properties, self.settings):
            key = (subject_id, dimension, value_index(self.vault, dimension, value), category, epoch)
            entry = self.pending.get(key)
            if entry is None:
                self.pending[key] = _Pending(value, contribution, 1, occurred_at)
            else:
                entry.score += contribution
                entry.evidence += 1
                entry.last_seen = max(entry.last_seen, occurred_at)

    def flush(self, session: Session, ciphers: Mapping[str, SubjectCipher]) -> int:
        """Write the batch's signals; returns the number of rows touched."""
        if not self.pending:
            return 0
        subjects = sorted({key[0] for key in self.pending})
        lock_subjects(session, subjects)
        existing = {
            (r.subject_id, r.dimension, bytes(r.value_index), r.category, r.epoch): r
            for r in session.execute(
                select(
                    Signal.subject_id,
                    Signal.dimension,
                    Signal.value_index,
                    Signal.category,
                    Signal.epoch,
                    Signal.score,
                    Signal.score_at,
                    Signal.evidence,
                    Signal.last_seen,
                ).where(
                    Signal.subject_id.in_(subjects),
                    Signal.value_index.in_(sorted({key[2] for key in self.pending})),
                )
            )
        }
        updates, inserts = [], []
        half_life = self.settings.half_life_days
        for key, entry in self.pending.items():
            subject_id, dimension, index, category, epoch = key
            old = existing.get(key)
            if old is not None:
                updates.append(
                    {
                        "k_subject": subject_id,
                        "k_dimension": dimension,
                        "k_index": index,
                        "k_category": category,
                        "k_epoch": epoch,
                        "score": decay(old.score, old.score_at, self.now, half_life) + entry.score,
                        "score_at": self.now,
                        "evidence": old.evidence + entry.evidence,
                        "last_seen": max(old.last_seen, entry.last_seen),
                    }
                )
            else:
                cipher = ciphers[subject_id]
                inserts.append(
                    {
                        "subject_id": subject_id,
                        "dimension": dimension,
                        "value_index": index,
                        "category": category,
                        "epoch": epoch,
                        "value_ct": cipher.encrypt(
                            TABLE, "value", row_key(dimension, index, category, epoch), entry.value.encode()
                        ),
                        "score": entry.score,
                        "score_at": self.now,
                        "evidence": entry.evidence,
                        "last_seen": entry.last_seen,
                    }
                )
        table = cast(Table, Signal.__table__)
        if inserts:
            session.execute(insert(table), inserts)
        if updates:
            # Core executemany by primary key: one statement, one round trip per chunk.
            session.execute(
                update(table)
                .where(
                    table.c.subject_id == bindparam("k_subject"),
                    table.c.dimension == bindparam("k_dimension"),
                    table.c.value_index == bindparam("k_index"),
                    table.c.category == bindparam("k_category"),
                    table.c.epoch == bindparam("k_epoch"),
                )
                .values(
                    score=bindparam("score"),
                    score_at=bindparam("score_at"),
                    evidence=bindparam("evidence"),
                    last_seen=bindparam("last_seen"),
                ),
                updates,
            )
        touched = len(self.pending)
        self.pending.clear()
        return touched


def lock_subjects(session: Session, subject_ids: Iterable[str]) -> None:
    """Serialise signal writers per subject on PostgreSQL (sorted, so no two batches deadlock)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big", signed=True) for s in subject_ids})
    session.execute(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"), {"keys": keys})


def absorb(
    session: Session, source: SubjectCipher, target: SubjectCipher, settings: SignalSettings, now: datetime
) -> None:
    """Merge: the merged subject's signals join the survivor's (re-encrypted; same keys add up)."""
    moving = session.scalars(select(Signal).where(Signal.subject_id == source.subject_id)).all()
    if not moving:
        return
    lock_subjects(session, [source.subject_id, target.subject_id])
    for row in moving:
        key = row_key(row.dimension, bytes(row.value_index), row.category, row.epoch)
        value = source.decrypt(TABLE, "value", key, row.value_ct)
        session.delete(row)
        session.flush()
        into = session.get(Signal, (target.subject_id, row.dimension, row.value_index, row.category, row.epoch))
        if into is None:
            session.add(
                Signal(
                    subject_id=target.subject_id,
                    dimension=row.dimension,
                    value_index=row.value_index,
                    category=row.category,
                    epoch=row.epoch,
                    value_ct=target.encrypt(TABLE, "value", key, value),
                    score=decay(row.score, row.score_at, now, settings.half_life_days),
                    score_at=now,
                    evidence=row.evidence,
                    last_seen=row.last_seen,
                )
            )
        else:
            into.score = decay(into.score, into.score_at, now, settings.half_life_days) + decay(
                row.score, row.score_at, now, settings.half_life_days
            )
            into.score_at = now
            into.evidence += row.evidence
            into.last_seen = max(into.last_seen, row.last_seen)
        session.flush()


@dataclass(frozen=True)
class Permitted:
    """What a view may count: categories its policy covers, evidence stamped at or after an epoch."""

    categories: frozenset[str]
    min_epoch: datetime

    def admits(self, category: str, epoch: datetime) -> bool:
        return epoch >= self.min_epoch and covers(self.categories, category)


@dataclass
class LeftOut:
    """Evidence a view did not count, by dimension, category and reason (for ``explain``)."""

    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)


def read(
    session: Session,
    cipher: SubjectCipher,
    permitted: Permitted,
    settings: SignalSettings,
    now: datetime,
    left_out: LeftOut | None = None,
) -> list[Behaviour]:
    """The subject's behavioural signals that ``permitted`` admits, summed across buckets and
    decayed to ``now``: one indexed query by subject, one decryption per value."""
    rows = session.execute(
        select(
            Signal.dimension,
            Signal.value_index,
            Signal.category,
            Signal.epoch,
            Signal.value_ct,
            Signal.score,
            Signal.score_at,
            Signal.evidence,
            Signal.last_seen,
        ).where(Signal.subject_id == cipher.subject_id)
    )
    totals: dict[tuple[str, bytes], list[Any]] = {}
    for r in rows:
        if not permitted.admits(r.category, r.epoch):
            if left_out is not None:
                why = (
                    "category_not_in_policy"
                    if not covers(permitted.categories, r.category)
                    else "collected_before_consent"
                )
                left_out.counts[(r.dimension, r.category, why)] += r.evidence
            continue
        score = decay(r.score, r.score_at, now, settings.half_life_days)
        key = (r.dimension, bytes(r.value_index))
        total = totals.get(key)
        if total is None:
            totals[key] = [r, score, r.evidence, r.last_seen]
        else:
            total[1] += score
            total[2] += r.evidence
            total[3] = max(total[3], r.last_seen)
    result = []
    for (dimension, index), (first, score, evidence, last_seen) in totals.items():
        value = cipher.decrypt(TABLE, "value", row_key(dimension, index, first.category, first.epoch), first.value_ct)
        result.append(Behaviour(dimension, value.decode(), score, evidence, last_seen))
    return result
