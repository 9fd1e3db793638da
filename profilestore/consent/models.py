"""The consent ledger (append-only, hash-chained) and the current state derived from it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from profilestore.db import Base


class ConsentRecord(Base):
    """One consent decision as collected. Never updated or deleted: the chain proves it."""

    __tablename__ = "consent_records"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    receipt_id: Mapped[str] = mapped_column(String(40), index=True)
    purpose: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # granted | denied | withdrawn
    notice_key: Mapped[str | None] = mapped_column(String(100))
    notice_version: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(100))
    collected_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    client_id: Mapped[str] = mapped_column(String(40))
    evidence_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ConsentState(Base):
    """Current state per (subject, purpose), derived from the ledger; kept for fast reads.

    ``grant_started_at`` is when the continuous grant now in force began (the person's time).
    ``grant_epoch`` is the server time from which this store has held that grant as in force: data
    is stamped with the subject's latest grant epoch when collected, so "collected during the grant
    now in force" is ``stamp >= grant_epoch`` — exact, or stricter after a late record rewrote
    history, never looser.
    """

    __tablename__ = "consent_state"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[str] = mapped_column(String(40))
    collected_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    grant_started_at: Mapped[datetime | None]
    grant_epoch: Mapped[datetime | None]
    updated_at: Mapped[datetime]
