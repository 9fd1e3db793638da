"""Subjects, their identifiers (blind index + encrypted value) and the record of merges."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from profilestore.db import Base


class Subject(Base):
    """One person, by an opaque id. A merged subject stays as a tombstone pointing at its survivor."""

    __tablename__ = "subjects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # active | merged | restricted
    merged_into: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Identifier(Base):
    """Lookup from a keyed blind index to its subject; keyed (and distributable) by the index."""

    __tablename__ = "identifiers"

    blind_index: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    value_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class SubjectMerge(Base):
    """A merge: ``subject_id`` was folded into ``merged_into`` (always the final survivor)."""

    __tablename__ = "subject_merges"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merged_into: Mapped[str] = mapped_column(String(40), index=True)
    merged_at: Mapped[datetime]
    client_id: Mapped[str | None] = mapped_column(String(40))
