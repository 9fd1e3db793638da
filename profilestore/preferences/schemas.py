"""Declared-preference bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from profilestore.identity.schemas import Identifiers

PreferenceValue = str | int | float | bool | list[str]


class PreferenceItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_.-]*$")
    value: PreferenceValue
    category: str = Field(min_length=1, max_length=200, description="A data category, e.g. user.preferences.interests")


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identifiers: Identifiers
    preferences: list[PreferenceItem] = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=100)
    declared_at: AwareDatetime


class PreferencesStored(BaseModel):
    subject_id: str | None = Field(description="None when no consenting subject has these identifiers")
    stored: int
    dropped: int
    dropped_keys: list[str] = Field(description="Keys not stored: no purpose in force may use their category")


class PreferenceOut(BaseModel):
    key: str
    value: PreferenceValue
    category: str
    source: str
    declared_at: datetime
