"""Consent bodies, following the API contract in DESIGN.md."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from ipaddress import ip_address

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from profilestore.identity.schemas import Identifiers
from profilestore.purposes.schemas import NoticeVersion


class ConsentStatus(StrEnum):
    granted = "granted"
    denied = "denied"
    withdrawn = "withdrawn"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentItem(_In):
    purpose: str = Field(min_length=1, max_length=200)
    status: ConsentStatus


class NoticeRef(_In):
    key: str = Field(min_length=1, max_length=100)
    version: NoticeVersion


class Evidence(_In):
    """How the consent was collected. Stored encrypted; the IP is truncated first (/24, /48)."""

    user_agent: str | None = Field(default=None, max_length=1000)
    ip: str | None = Field(default=None, max_length=64, description="IPv4 or IPv6; truncated before storing")
    locale: str | None = Field(default=None, max_length=35)

    @field_validator("ip")
    @classmethod
    def _an_ip_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ip_address(value.strip()))
        except ValueError:
            raise ValueError("not a valid IPv4 or IPv6 address") from None


class ConsentIn(_In):
    identifiers: Identifiers
    consents: list[ConsentItem] = Field(min_length=1, max_length=100)
    notice: NoticeRef
    source: str = Field(min_length=1, max_length=100)
    collected_at: AwareDatetime
    evidence: Evidence | None = None


class RecordOut(BaseModel):
    record_id: str
    purpose: str
    status: ConsentStatus
    collected_at: datetime
    expires_at: datetime | None
    source: str
    hash: str


class ConsentReceipt(BaseModel):
    receipt_id: str
    subject_id: str
    recorded_at: datetime
    records: list[RecordOut]


class StateOut(BaseModel):
    purpose: str
    status: str = Field(description="granted, denied, withdrawn, or expired (a grant past its expiry)")
    since: datetime
    expires_at: datetime | None
    grant_started_at: datetime | None
    record_id: str


class HistoryRecord(BaseModel):
    seq: int
    record_id: str
    receipt_id: str
    subject_id: str
    purpose: str
    status: ConsentStatus
    notice: NoticeRef | None
    source: str
    collected_at: datetime
    recorded_at: datetime
    expires_at: datetime | None
    client_id: str
    evidence: dict[str, str | None] | None
    prev_hash: str
    hash: str


class ConsentsOut(BaseModel):
    subject_id: str
    state: list[StateOut]
    history: list[HistoryRecord]
