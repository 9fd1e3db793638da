"""Behavioural events and the receipts that make ingest idempotent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from profilestore.db import Base


class Event(Base):
    """One stored event. Keyed by subject (distributable) and occurrence time (partitionable);
    ``epoch`` is the subject's latest grant epoch when it was collected (see ConsentState) and
    ``purposes`` the purposes in force whose policy allowed it then."""

    __tablename__ = "events"

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


class EventReceipt(Base):
    """A stored event's message id, per client: a repeat is a duplicate and is not stored again."""

    __tablename__ = "event_receipts"

    client_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime]


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
