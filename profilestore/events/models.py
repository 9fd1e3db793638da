"""Behavioural events, unique per subject, client and message id: what makes ingest idempotent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from profilestore.db import Base


class Event(Base):
    """One stored event. Keyed by subject (distributable) and occurrence time (partitionable);
    ``epoch`` is the subject's latest grant epoch when it was collected (see ConsentState) and
    ``purposes`` the purposes in force whose policy allowed it then.

    A repeated message id from the same client, for the same subject, is a duplicate: the unique
    index below refuses it. It leads with the subject, so that a batch's new entries land next to
    each other (a batch holds a few hundred people), not at a random place per event as a key of
    client and message id alone would: that wrote about a page per event
    (docs/decisions/0006-hot-paths.md)."""

    __tablename__ = "events"
    __table_args__ = (Index("uq_events_message", "subject_id", "client_id", "message_id", unique=True),)

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime]
    epoch: Mapped[datetime]
    purposes: Mapped[list[str]] = mapped_column(JSON)
    properties_ct: Mapped[bytes] = mapped_column(LargeBinary)


class GateGeneration(Base):
    """One counter that every write to what the collection gate reads moves on: identifiers,
    subjects, consent states, purposes, their policies and the taxonomy. SQLite triggers keep it
    (migration 0004), so no writer can forget to. A batch planned on a snapshot is written as
    planned when the counter has not moved since (``events/intake.py``). PostgreSQL has no
    triggers on it — a counter row that every consent write updates would queue those writes on
    one another — and looks the batch up again instead."""

    __tablename__ = "gate_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
