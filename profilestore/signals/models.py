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
