"""Incremental signals: what views are made of.

One row per (subject, dimension, value, data category, grant epoch): kept apart by category and
epoch so that a view counts exactly the evidence its purpose may use (category in its policy,
collected during the grant now in force) without re-reading events. The value is found by a keyed
index (``value_index``) and stored encrypted; the score is recency-decayed and kept as of
``score_at`` (decay it to now when reading).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from profilestore.db import Base


class Signal(Base):
    __tablename__ = "signals"
    # SQLite keeps the rows in primary-key order, so a subject's signals are read as one range
    # rather than through a separate index (PostgreSQL ignores the option).
    __table_args__ = {"sqlite_with_rowid": False}

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_index: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    category: Mapped[str] = mapped_column(String(200), primary_key=True)
    epoch: Mapped[datetime] = mapped_column(primary_key=True)
    value_ct: Mapped[bytes] = mapped_column(LargeBinary)
    score: Mapped[float] = mapped_column(Float)
    score_at: Mapped[datetime]
    evidence: Mapped[int] = mapped_column(Integer)
    last_seen: Mapped[datetime]


class SignalValue(Base):
    """A value's signal summed over all its buckets: what a view reads when every bucket of the
    subject is one its purpose may count (``SignalBucket``), so that it reads one row per value
    and aggregates nothing. Kept up by the same writes as ``Signal`` (an upsert per touched value)
    and recounted from it whenever buckets are forgotten or moved."""

    __tablename__ = "signal_values"
    __table_args__ = {"sqlite_with_rowid": False}

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_index: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    value_ct: Mapped[bytes] = mapped_column(LargeBinary)
    score: Mapped[float] = mapped_column(Float)
    score_at: Mapped[datetime]
    evidence: Mapped[int] = mapped_column(Integer)
    last_seen: Mapped[datetime]


class SignalBucket(Base):
    """The (data category, grant epoch) buckets a subject's signals are kept in: a view checks
    them to know whether the sums in ``SignalValue`` are all its purpose may count."""

    __tablename__ = "signal_buckets"
    __table_args__ = {"sqlite_with_rowid": False}

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    category: Mapped[str] = mapped_column(String(200), primary_key=True)
    epoch: Mapped[datetime] = mapped_column(primary_key=True)
