"""Client bodies. A key appears in exactly one response: the one that created it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Role(StrEnum):
    collector = "collector"
    reader = "reader"
    privacy = "privacy"
    admin = "admin"


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Role
    purposes: list[str] = Field(default_factory=list, max_length=200)


class ClientOut(BaseModel):
    client_id: str
    name: str
    role: Role
    purposes: list[str]
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ClientCreated(ClientOut):
    key: str = Field(description="Shown once; only its hash is stored")
