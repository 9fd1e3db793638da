"""Purposes (hierarchical, dotted keys), data categories, policies and notice versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from profilestore.db import Base


class DataCategory(Base):
    __tablename__ = "data_categories"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    parent: Mapped[str | None] = mapped_column(ForeignKey("data_categories.key"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    is_default: Mapped[bool] = mapped_column(Boolean)


class Purpose(Base):
    __tablename__ = "purposes"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    parent: Mapped[str | None] = mapped_column(ForeignKey("purposes.key"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(String(32))
    retention_days: Mapped[int] = mapped_column(Integer)
    consent_valid_days: Mapped[int] = mapped_column(Integer)
    is_default: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PurposeCategory(Base):
    """The policy: which data categories a purpose may use (a category covers its children)."""

    __tablename__ = "purpose_categories"

    purpose: Mapped[str] = mapped_column(ForeignKey("purposes.key", ondelete="CASCADE"), primary_key=True)
    category: Mapped[str] = mapped_column(ForeignKey("data_categories.key"), primary_key=True)


class Notice(Base):
    """The exact text a person was shown, by key and version; the hash proves which text."""

    __tablename__ = "notices"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    client_id: Mapped[str | None] = mapped_column(String(40))


class NoticePurpose(Base):
    __tablename__ = "notice_purposes"

    notice_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    notice_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(ForeignKey("purposes.key"), primary_key=True)
