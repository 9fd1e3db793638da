"""Signals: recency-decayed scores per (subject, dimension, value), kept apart by data category and
grant epoch, updated incrementally as events arrive so that reading a view never re-reads history.

Scores decay exponentially with the configured half-life. A row holds its score as of
``score_at``. A batch's evidence (``evidence.py``) is aggregated in memory and written as one
upsert per touched row, which decays the stored score to the batch's time and adds the new score in
SQL: a batch never reads the rows it updates. A view sums a subject's permitted rows per value in
one statement, decayed to now. On PostgreSQL, writers of the same subject's signals queue on a
transaction-level advisory lock (taken in sorted order, so two batches can't deadlock); SQLite
serialises writers anyway.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    Float,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import ColumnElement

from profilestore.config import SignalSettings
from profilestore.crypto.service import SubjectCipher
from profilestore.kit.bulk import Bulk
from profilestore.kit.sql import rows
from profilestore.kit.sqlexpr import any_value, decayed, greatest
from profilestore.purposes.rules import covers
from profilestore.signals.evidence import Evidence, decay
from profilestore.signals.models import Signal
from profilestore.signals.types import Behaviour

TABLE = "signals"


def row_key(dimension: str, index: bytes) -> str:
    """The associated-data row key of a signal's encrypted value: the value, not its bucket, so
    that any bucket's copy serves a view (they are interchangeable: the same value)."""
    return f"{dimension}|{index.hex()}"


@dataclass
class _Pending:
    value: str
    score: float  # as of the writer's reference time
    evidence: int
    last_seen: datetime


SignalKey = tuple[str, str, bytes, str, datetime]  # subject, dimension, value index, category, epoch


def _upsert(dialect: str, half_life_days: float) -> ClauseElement:
    """Insert a signal row, or fold the new evidence into the row already there: its score decayed
    to the new reference time, plus the new score; evidence added; the later last-seen kept. The
    database does the arithmetic, so a batch never reads the rows it updates."""
    table = cast(Table, Signal.__table__)
    insert_ = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    new = insert_.excluded
    return insert_.on_conflict_do_update(
        index_elements=[table.c.subject_id, table.c.dimension, table.c.value_index, table.c.category, table.c.epoch],
        set_={
            "score": decayed(table.c.score, table.c.score_at, new.score_at, literal_column(repr(half_life_days)))
            + new.score,
            "score_at": new.score_at,
            "evidence": table.c.evidence + new.evidence,
            "last_seen": greatest(table.c.last_seen, new.last_seen),
        },
    )


@lru_cache(maxsize=8)
def _upsert_for(half_life_days: float) -> Bulk:
    return Bulk(lambda dialect: _upsert(dialect, half_life_days))


@dataclass
class SignalWriter:
    """Collects one batch's evidence; its ``rows`` (sealed, one per touched signal) are written
    by ``write``, so that the sealing can happen before the write transaction."""

    settings: SignalSettings
    now: datetime
    pending: dict[SignalKey, _Pending] = field(default_factory=dict)
    # sealed values by (subject, dimension, value index): the same for every bucket and batch
    sealed: dict[tuple[str, str, bytes], bytes] = field(default_factory=dict)

    def add(self, subject_id: str, category: str, epoch: datetime, evidence: Evidence) -> None:
        for dimension, index, value in evidence.values:
            key = (subject_id, dimension, index, category, epoch)
            entry = self.pending.get(key)
            if entry is None:
                self.pending[key] = _Pending(value, evidence.contribution, 1, evidence.occurred_at)
            else:
                entry.score += evidence.contribution
                entry.evidence += 1
                if evidence.occurred_at > entry.last_seen:
                    entry.last_seen = evidence.occurred_at

    def rows(self, ciphers: Mapping[str, SubjectCipher]) -> list[dict[str, Any]]:
        """The signal rows of the evidence added so far, in key order (two writers of the same
        rows on PostgreSQL meet them in the same order)."""
        rows = []
        for key in sorted(self.pending):
            subject_id, dimension, index, category, epoch = key
            entry = self.pending[key]
            sealed = self.sealed.get(key[:3])
            if sealed is None:
                sealed = ciphers[subject_id].encrypt(TABLE, "value", row_key(dimension, index), entry.value.encode())
                self.sealed[key[:3]] = sealed
            rows.append(
                {
                    "subject_id": subject_id,
                    "dimension": dimension,
                    "value_index": index,
                    "category": category,
                    "epoch": epoch,
                    "value_ct": sealed,
                    "score": entry.score,
                    "score_at": self.now,
                    "evidence": entry.evidence,
                    "last_seen": entry.last_seen,
                }
            )
        return rows

    def flush(self, session: Session, ciphers: Mapping[str, SubjectCipher]) -> int:
        """Write the evidence added so far; returns the number of signal rows touched."""
        rows = self.rows(ciphers)
        write(session, self.settings, rows)
        self.pending.clear()
        return len(rows)


def write_params(dialect: Dialect, settings: SignalSettings, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The driver's parameters for writing ``rows``, worked out before the write transaction."""
    return _upsert_for(settings.half_life_days).params(dialect, rows)


def write(
    session: Session, settings: SignalSettings, rows: Sequence[Mapping[str, Any]], params: Sequence[Any] | None = None
) -> None:
    """Fold ``rows`` (from ``SignalWriter.rows``) into the stored signals, one upsert per row;
    ``params``, when given, are ``write_params`` of the same rows."""
    if rows:
        lock_subjects(session, {row["subject_id"] for row in rows})
        upsert = _upsert_for(settings.half_life_days)
        upsert.execute_params(
            session, params if params is not None else upsert.params(session.get_bind().dialect, rows)
        )


def forget(session: Session, subject_id: str, buckets: Iterable[tuple[str, datetime]] | None = None) -> None:
    """Delete a subject's signals (only the given (category, epoch) buckets, when given), to be
    rebuilt from events."""
    lock_subjects(session, [subject_id])
    query = delete(Signal).where(Signal.subject_id == subject_id)
    if buckets is not None:
        query = query.where(tuple_(Signal.category, Signal.epoch).in_(sorted(buckets)))
    session.execute(query)


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
        key = row_key(row.dimension, bytes(row.value_index))
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


def covered_by(column: ColumnElement[str], categories: frozenset[str]) -> ColumnElement[bool]:
    """SQL for ``covers(categories, column)``: the category is one of them or beneath one."""
    if not categories:
        return false()
    return or_(*(or_(column == c, column.startswith(c + ".", autoescape=True)) for c in sorted(categories)))


def admitted(
    category: ColumnElement[str], epoch: ColumnElement[datetime], categories: frozenset[str]
) -> ColumnElement[bool]:
    """SQL: collected at or after the bound ``min_epoch``, in a category the policy covers."""
    return and_(epoch >= bindparam("min_epoch", type_=epoch.type), covered_by(category, categories))


@dataclass(frozen=True)
class Permitted:
    """What a view may count: categories its policy covers, evidence stamped at or after an epoch."""

    categories: frozenset[str]
    min_epoch: datetime

    def admits(self, category: str, epoch: datetime) -> bool:
        return epoch >= self.min_epoch and covers(self.categories, category)

    def clause(self, category: ColumnElement[str], epoch: ColumnElement[datetime]) -> ColumnElement[bool]:
        """SQL for ``admits``, with the epoch as the bound parameter ``min_epoch`` (``params``
        gives its value): a statement built from it serves every subject under the same policy."""
        return admitted(category, epoch, self.categories)

    @property
    def params(self) -> dict[str, Any]:
        return {"min_epoch": self.min_epoch}


@dataclass(frozen=True)
class Reading:
    """A view's behavioural evidence: the strongest values of each dimension (plus any asked for
    by index), and the permitted evidence of each dimension in all."""

    values: list[Behaviour]
    volumes: dict[str, int]


@lru_cache(maxsize=256)
def _read_statement(categories: frozenset[str]) -> Select[Any]:
    """The statement behind ``read`` for one policy (its categories are part of the statement;
    everything else is a parameter). Building it costs more than running it, hence the cache."""
    s = Signal.__table__.c
    now = bindparam("now", type_=s.score_at.type)
    return (
        select(
            s.dimension,
            s.value_index,
            func.sum(decayed(s.score, s.score_at, now, bindparam("half_life", type_=Float()))),
            func.sum(s.evidence),
            func.max(s.last_seen),
            # Every bucket of a value holds the same value, sealed for the value, not the bucket.
            any_value(s.value_ct),
        )
        .where(s.subject_id == bindparam("subject_id"), admitted(s.category, s.epoch, categories))
        .group_by(s.dimension, s.value_index)
    )


def read(
    session: Session,
    cipher: SubjectCipher,
    permitted: Permitted,
    settings: SignalSettings,
    now: datetime,
    *,
    limit: int,
    also: Iterable[bytes] = (),
) -> Reading:
    """The subject's permitted behavioural signals, summed across buckets, decayed to ``now``:
    the ``limit`` strongest values per dimension, and the values whose index is in ``also``.

    One statement filters, decays and sums in the database, one row per value; only the values
    returned are decrypted, so the work done in Python stays near the size of the view.
    """
    params = {"subject_id": cipher.subject_id, "now": now, "half_life": settings.half_life_days, **permitted.params}
    by_dimension: dict[str, list[tuple[float, bytes, int, datetime, bytes]]] = {}
    for dimension, index, score, evidence, last_seen, value_ct in rows(
        session, _read_statement(permitted.categories), params
    ):
        by_dimension.setdefault(dimension, []).append((score, bytes(index), int(evidence), last_seen, value_ct))
    wanted = set(also)
    found, volumes = [], {}
    for dimension, values in by_dimension.items():
        volumes[dimension] = sum(v[2] for v in values)
        values.sort(key=lambda v: v[0], reverse=True)
        # Keep every value tied with the last one kept: the ranking breaks ties by value, which
        # only the decrypted values show.
        floor = values[limit - 1][0] if len(values) > limit else None
        for score, index, evidence, last_seen, value_ct in values:
            if floor is None or score >= floor or index in wanted:
                value = cipher.decrypt(TABLE, "value", row_key(dimension, index), value_ct)
                found.append(Behaviour(dimension, value.decode(), score, evidence, last_seen))
    return Reading(found, volumes)


def left_out(session: Session, subject_id: str, permitted: Permitted) -> Counter[tuple[str, str, str]]:
    """Evidence a view does not count, by (dimension, category, reason): for ``explain``."""
    s = Signal.__table__.c
    rows = session.execute(
        select(s.dimension, s.category, s.evidence).where(
            s.subject_id == subject_id, not_(permitted.clause(s.category, s.epoch))
        ),
        permitted.params,
    )
    counts: Counter[tuple[str, str, str]] = Counter()
    for dimension, category, evidence in rows:
        why = "category_not_in_policy" if not covers(permitted.categories, category) else "collected_before_consent"
        counts[(dimension, category, why)] += evidence
    return counts
