"""Native event bodies (POST /v1/events)."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from profilestore.identity.schemas import Identifiers


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identifiers: Identifiers
    type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,99}$", description="snake_case, e.g. product_viewed")
    properties: dict[str, Any] = Field(default_factory=dict)
    occurred_at: AwareDatetime
    message_id: str = Field(min_length=1, max_length=200)
    category: str | None = Field(
        default=None, max_length=200, description="Data category; default by type (see configuration)"
    )


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1)


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int
    dropped: dict[str, int] = Field(description="Events not stored, by reason: no_consent, restricted")
