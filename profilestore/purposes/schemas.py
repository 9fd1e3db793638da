"""Request and response bodies of purposes, categories and notices."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class LegalBasis(StrEnum):
    consent = "consent"
    contract = "contract"
    legitimate_interest = "legitimate_interest"
    legal_obligation = "legal_obligation"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PurposeIn(_In):
    name: str = Field(min_length=1, max_length=200)
    parent: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    legal_basis: LegalBasis = LegalBasis.consent
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    consent_valid_days: int | None = Field(default=None, ge=1, le=36500)
    categories: list[str] = Field(default_factory=list, max_length=200)


class PurposeOut(BaseModel):
    key: str
    name: str
    parent: str | None
    description: str | None
    legal_basis: LegalBasis
    retention_days: int
    consent_valid_days: int
    categories: list[str]
    is_default: bool


class CategoryIn(_In):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


class CategoryOut(BaseModel):
    key: str
    parent: str | None
    name: str
    description: str | None
    is_default: bool


# A notice's version is a 32-bit INTEGER column on PostgreSQL: larger numbers are refused as
# input, not met as an overflow in the database (which answered 500).
MAX_NOTICE_VERSION = 2**31 - 1
NoticeVersion = Annotated[int, Field(ge=1, le=MAX_NOTICE_VERSION)]


class NoticeIn(_In):
    key: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: NoticeVersion
    text: str = Field(min_length=1, max_length=200_000)
    purposes: list[str] = Field(min_length=1, max_length=200)


class NoticeOut(BaseModel):
    key: str
    version: int
    text_sha256: str
    purposes: list[str]
    created_at: datetime


class NoticeWithText(NoticeOut):
    text: str
