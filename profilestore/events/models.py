"""Behavioural events and the receipts that make ingest idempotent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, LargeBinary, String
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
