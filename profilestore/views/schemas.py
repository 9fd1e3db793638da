"""View bodies. A default (non-personalised) view has exactly the fields of a personalised one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from profilestore.identity.schemas import Identifiers
from profilestore.preferences.schemas import PreferenceOut
from profilestore.views.ranking import RankedSignal


class ConsentSummary(BaseModel):
    in_force: bool
    basis: str | None = Field(description="granted (consent) or the legal basis that needs none")
    granted_since: datetime | None


class RecentEvent(BaseModel):
    type: str
    category: str
    occurred_at: datetime
    properties: dict[str, Any]


class LeftOut(BaseModel):
    section: str
    dimension: str | None
    category: str | None
    reason: str
    count: int


class Explanation(BaseModel):
    reason: str = Field(description="why the view is (not) personalised")
    left_out: list[LeftOut]


class ViewOut(BaseModel):
    purpose: str
    subject_id: str | None
    personalised: bool
    signals: dict[str, list[RankedSignal]]
    preferences: list[PreferenceOut]
    consent: ConsentSummary
    defaults: dict[str, list[str]] = Field(description="what to render for people the store can't classify")
    recent_events: list[RecentEvent] | None = None
    explain: Explanation | None = None


class ViewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(min_length=1, max_length=200)
    identifiers: Identifiers | None = None
    subject_id: str | None = Field(default=None, max_length=40)
    include: list[str] = Field(default_factory=list, max_length=5)
    explain: bool = False

    @model_validator(mode="after")
    def _one_way_to_name_the_subject(self) -> ViewIn:
        if (self.identifiers is None) == (self.subject_id is None):
            raise ValueError("give either identifiers or subject_id")
        return self


class ViewParams(BaseModel):
    """The query of ``GET /v1/subjects/{id}/view``, read as one model: FastAPI validates it in
    one go, where four parameters cost it four rounds of its own per-field work."""

    purpose: str = Field(min_length=1, max_length=200)
    include: list[str] | None = Field(default=None, max_length=5)
    explain: bool = False
    limit: int | None = Field(default=None, description="recent events to include")
