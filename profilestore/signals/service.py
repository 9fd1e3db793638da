"""Signals: recency-decayed scores per (subject, dimension, value), kept apart by data category and
grant epoch, updated incrementally as events arrive so that reading a view never re-reads history.

Scores decay exponentially with the configured half-life. A row holds its score as of
``score_at``. A batch's evidence (``evidence.py``) is aggregated in memory and written as one
upsert per touched row, which decays the stored score to the batch's time and adds the new score in
SQL: a batch never reads the rows it updates. On SQLite (``keeps_sums``) the same batch upserts each
touched value's sum over its buckets (``signal_values``) and notes the subject's buckets
(``signal_buckets``), and a view whose purpose may count every bucket of the subject reads those
sums, one row per value; otherwise, and on PostgreSQL, a view sums the permitted buckets per value
in one statement, decayed to now. On PostgreSQL, writers of
the same subject's signals queue on a transaction-level advisory lock (taken in sorted order, so
two batches can't deadlock); SQLite serialises writers anyway.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
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
from profilestore.kit.sqltypes import timestamp_reader, unconverted
from profilestore.purposes.rules import covers
from profilestore.signals.evidence import Evidence, decay
from profilestore.signals.models import Signal, SignalBucket, SignalValue
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


def _upsert(dialect: str, half_life_days: float, table: Table) -> ClauseElement:
    """Insert a signal row (a bucket's or a value's), or fold the new evidence into the row
    already there: its score decayed to the new reference time, plus the new score; evidence
    added; the later last-seen kept. The database does the arithmetic, so a batch never reads the
    rows it updates."""
    insert_ = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    new = insert_.excluded
    return insert_.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={
            "score": decayed(table.c.score, table.c.score_at, new.score_at, literal_column(repr(half_life_days)))
            + new.score,
            "score_at": new.score_at,
            "evidence": table.c.evidence + new.evidence,
            "last_seen": greatest(table.c.last_seen, new.last_seen),
        },
    )


@lru_cache(maxsize=8)
def _upserts_for(half_life_days: float) -> tuple[Bulk, Bulk]:
    return (
        Bulk(lambda dialect: _upsert(dialect, half_life_days, cast(Table, Signal.__table__))),
        Bulk(lambda dialect: _upsert(dialect, half_life_days, cast(Table, SignalValue.__table__))),
    )


def keeps_sums(dialect: str) -> bool:
    """Whether the per-value sums (``signal_values``, ``signal_buckets``) are kept: on SQLite,
    not on PostgreSQL. SQLite runs in the serving process, and summing a busy subject's buckets
    there cost a view most of its time; ready sums halved it. PostgreSQL sums in its server and a
    view's time is its round trips (ready sums changed nothing measurable, and reading the
    buckets first is one more trip), while every row a batch upserts costs about 20 µs there:
    keeping the sums cost a quarter of its ingest rate (bench/README.md, 2026-12-01)."""
    return dialect == "sqlite"


def _insert_buckets(dialect: str) -> ClauseElement:
    table = cast(Table, SignalBucket.__table__)
    return (pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)).on_conflict_do_nothing()


_INSERT_BUCKETS = Bulk(_insert_buckets)


@dataclass(frozen=True)
class Prepared:
    """A batch's signal writes as driver parameters for one database, worked out before the write
    transaction: the buckets' rows, and where they are kept (``keeps_sums``) the values' sums and
    the buckets themselves."""

    half_life_days: float
    subject_ids: frozenset[str]
    per_bucket: list[Any]
    per_value: list[Any]
    buckets: list[Any]


@dataclass
class SignalWriter:
    """Collects one batch's evidence; ``prepare`` seals it and turns it into the rows to write
    (``write``), so that the sealing can happen before the write transaction."""

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

    def prepare(self, ciphers: Mapping[str, SubjectCipher], dialect: Dialect) -> Prepared:
        """The rows of the evidence added so far, in key order (two writers of the same rows on
        PostgreSQL meet them in the same order), as parameters for ``dialect``."""
        sums = keeps_sums(dialect.name)
        per_bucket: list[dict[str, Any]] = []
        per_value: dict[tuple[str, str, bytes], dict[str, Any]] = {}
        buckets: set[tuple[str, str, datetime]] = set()
        for key in sorted(self.pending):
            subject_id, dimension, index, category, epoch = key
            entry = self.pending[key]
            sealed = self.sealed.get(key[:3])
            if sealed is None:
                sealed = ciphers[subject_id].encrypt(TABLE, "value", row_key(dimension, index), entry.value.encode())
                self.sealed[key[:3]] = sealed
            row = {
                "subject_id": subject_id,
                "dimension": dimension,
                "value_index": index,
                "value_ct": sealed,
                "score": entry.score,
                "score_at": self.now,
                "evidence": entry.evidence,
                "last_seen": entry.last_seen,
            }
            per_bucket.append({**row, "category": category, "epoch": epoch})
            buckets.add((subject_id, category, epoch))
            if not sums:
                continue
            total = per_value.get(key[:3])
            if total is None:
                per_value[key[:3]] = row
            else:  # the same value in another bucket of this batch: one sum for the value
                total["score"] += entry.score
                total["evidence"] += entry.evidence
                total["last_seen"] = max(total["last_seen"], entry.last_seen)
        upsert_signals, upsert_values = _upserts_for(self.settings.half_life_days)
        return Prepared(
            self.settings.half_life_days,
            frozenset(subject_id for subject_id, *_ in buckets),
            upsert_signals.params(dialect, per_bucket),
            upsert_values.params(dialect, list(per_value.values())),
            _INSERT_BUCKETS.params(
                dialect, [{"subject_id": s, "category": c, "epoch": e} for s, c, e in sorted(buckets if sums else ())]
            ),
        )

    def flush(self, session: Session, ciphers: Mapping[str, SubjectCipher]) -> int:
        """Write the bucket rows of the evidence added so far, for a rebuild; returns how many.
        The values' sums and the bucket list are left to ``recount``, which the rebuild runs
        next and which counts them again from every bucket anyway."""
        prepared = self.prepare(ciphers, session.get_bind().dialect)
        write(session, replace(prepared, per_value=[], buckets=[]))
        self.pending.clear()
        return len(prepared.per_bucket)


def write(session: Session, prepared: Prepared) -> None:
    """Fold a batch's prepared rows into the stored signals: one upsert per bucket row and per
    value, and the buckets noted."""
    if not prepared.per_bucket:
        return
    lock_subjects(session, prepared.subject_ids)
    upsert_signals, upsert_values = _upserts_for(prepared.half_life_days)
    upsert_signals.execute_params(session, prepared.per_bucket)
    upsert_values.execute_params(session, prepared.per_value)
    _INSERT_BUCKETS.execute_params(session, prepared.buckets)


def forget(session: Session, subject_id: str, buckets: Iterable[tuple[str, datetime]] | None = None) -> None:
    """Delete a subject's signals (only the given (category, epoch) buckets, when given), to be
    rebuilt from events; ``recount`` then sums what remains."""
    lock_subjects(session, [subject_id])
    query = delete(Signal).where(Signal.subject_id == subject_id)
    if buckets is not None:
        query = query.where(tuple_(Signal.category, Signal.epoch).in_(sorted(buckets)))
    session.execute(query)


def recount(session: Session, settings: SignalSettings, subject_ids: Iterable[str], now: datetime) -> None:
    """Sum the subjects' values and note their buckets again from their bucket rows: after
    buckets were forgotten, rebuilt or moved by a merge."""
    if not keeps_sums(session.get_bind().dialect.name):
        return
    subject_ids = sorted(set(subject_ids))
    lock_subjects(session, subject_ids)
    s = Signal.__table__.c
    v = cast(Table, SignalValue.__table__)
    b = cast(Table, SignalBucket.__table__)
    session.execute(delete(v).where(v.c.subject_id.in_(subject_ids)))
    session.execute(delete(b).where(b.c.subject_id.in_(subject_ids)))
    at = bindparam("now", now, type_=s.score_at.type)
    sums = (
        select(
            s.subject_id,
            s.dimension,
            s.value_index,
            any_value(s.value_ct),
            func.sum(decayed(s.score, s.score_at, at, literal_column(repr(settings.half_life_days)))),
            at,
            func.sum(s.evidence),
            func.max(s.last_seen),
        )
        .where(s.subject_id.in_(subject_ids))
        .group_by(s.subject_id, s.dimension, s.value_index)
    )
    columns = ["subject_id", "dimension", "value_index", "value_ct", "score", "score_at", "evidence", "last_seen"]
    session.execute(v.insert().from_select(columns, sums))
    kinds = select(s.subject_id, s.category, s.epoch).where(s.subject_id.in_(subject_ids)).distinct()
    session.execute(b.insert().from_select(["subject_id", "category", "epoch"], kinds))


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
    recount(session, settings, [source.subject_id, target.subject_id], now)


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
    """The statement that sums a subject's permitted buckets per value, for one policy (its
    categories are part of the statement; everything else is a parameter). Building it costs
    more than running it, hence the cache."""
    s = Signal.__table__.c
    now = bindparam("now", type_=s.score_at.type)
    return (
        select(
            s.dimension,
            s.value_index,
            func.sum(decayed(s.score, s.score_at, now, bindparam("half_life", type_=Float()))),
            func.sum(s.evidence),
            unconverted(func.max(s.last_seen)),
            # Every bucket of a value holds the same value, sealed for the value, not the bucket.
            any_value(s.value_ct),
        )
        .where(s.subject_id == bindparam("subject_id"), admitted(s.category, s.epoch, categories))
        .group_by(s.dimension, s.value_index)
    )


def _sums_statement() -> Select[Any]:
    """The statement that reads a subject's per-value sums, decayed to now: the same columns as
    ``_read_statement``, one row per value read, nothing to aggregate."""
    v = SignalValue.__table__.c
    now = bindparam("now", type_=v.score_at.type)
    return select(
        v.dimension,
        v.value_index,
        decayed(v.score, v.score_at, now, bindparam("half_life", type_=Float())),
        v.evidence,
        unconverted(v.last_seen),
        v.value_ct,
    ).where(v.subject_id == bindparam("subject_id"))


_READ_SUMS = _sums_statement()
_score, _evidence = itemgetter(2), itemgetter(3)
_BUCKETS = select(SignalBucket.category, SignalBucket.epoch).where(SignalBucket.subject_id == bindparam("subject_id"))


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

    When the purpose may count every bucket the subject has (the usual case), the per-value sums
    are read as they are; otherwise one statement filters, decays and sums the permitted buckets
    in the database. Either way one row per value reaches Python, and only the values returned are
    decrypted, so the work done in Python stays near the size of the view.
    """
    params = {"subject_id": cipher.subject_id, "now": now, "half_life": settings.half_life_days, **permitted.params}
    dialect = session.get_bind().dialect
    every_bucket = keeps_sums(dialect.name) and all(
        permitted.admits(category, epoch) for category, epoch in rows(session, _BUCKETS, params)
    )
    statement = _READ_SUMS if every_bucket else _read_statement(permitted.categories)
    # Rows are (dimension, index, score, evidence, last seen, sealed value), as the driver gives
    # them: only those returned are made into anything, their timestamps included.
    as_timestamp = timestamp_reader(dialect)
    open_value = cipher.opener(TABLE, "value")
    by_dimension: dict[str, list[Sequence[Any]]] = {}
    for row in rows(session, statement, params):
        by_dimension.setdefault(row[0], []).append(row)
    wanted = {bytes(index) for index in also}
    found, volumes = [], {}
    for dimension, values in by_dimension.items():
        volumes[dimension] = sum(map(_evidence, values))
        values.sort(key=_score, reverse=True)
        kept = values[:limit]
        if len(values) > limit:
            # Keep every value tied with the last one kept (the ranking breaks ties by value,
            # which only the decrypted values show), and the values asked for by index.
            floor = kept[-1][2]
            kept += [row for row in values[limit:] if row[2] >= floor or bytes(row[1]) in wanted]
        for _, index, score, evidence, last_seen, value_ct in kept:
            value = open_value(row_key(dimension, index), value_ct).decode()
            found.append(Behaviour(dimension, value, score, evidence, as_timestamp(last_seen)))
    return Reading(found, volumes)


def left_out(
    session: Session, subject_id: str, permitted: Permitted | None, nothing_because: str = ""
) -> Counter[tuple[str, str, str]]:
    """Evidence a view does not count, by (dimension, category, reason): for ``explain``. Without
    ``permitted`` (a default view, which may count nothing) all of it, for ``nothing_because``."""
    s = Signal.__table__.c
    statement = select(s.dimension, s.category, s.evidence).where(s.subject_id == subject_id)
    if permitted is not None:
        statement = statement.where(not_(permitted.clause(s.category, s.epoch)))
    counts: Counter[tuple[str, str, str]] = Counter()
    for dimension, category, evidence in session.execute(statement, permitted.params if permitted else {}):
        why = nothing_because
        if permitted is not None:
            in_policy = covers(permitted.categories, category)
            why = "collected_before_consent" if in_policy else "category_not_in_policy"
        counts[(dimension, category, why)] += evidence
    return counts
