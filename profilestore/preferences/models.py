"""Declared preferences: versioned, values encrypted with the subject's data key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from profilestore.db import Base


class Preference(Base):
    """One declaration. The current version of a key has ``superseded_at`` null."""

    __tablename__ = "preferences"
    __table_args__ = (Index("ix_preferences_subject_key", "subject_id", "key"),)

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    preference_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(200))
    value_ct: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(100))
    declared_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    superseded_at: Mapped[datetime | None]
    client_id: Mapped[str] = mapped_column(String(40))
