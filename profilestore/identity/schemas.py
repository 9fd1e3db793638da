"""Identifier bodies: known kinds only, at least one present; the states a subject can be in."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SubjectStatus(StrEnum):
    active = "active"
    merged = "merged"  # into another subject, which holds everything now
    restricted = "restricted"  # processing stopped, data kept (a restriction request)


class Identifiers(BaseModel):
    """Identifiers of one person. Values are normalised and then kept only as a blind index and
    a ciphertext; they never appear in a URL, a log line or an error message."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=512)
    loyalty_id: str | None = Field(default=None, max_length=512)
    anonymous_id: str | None = Field(default=None, max_length=512)

    @model_validator(mode="after")
    def _at_least_one(self) -> Identifiers:
        if not self.present():
            raise ValueError("at least one identifier is required")
        return self

    def present(self) -> dict[str, str]:
        # The fields' own values (every field is a plain str or None): an event batch asks a
        # thousand times, and model_dump() would build and copy the whole model each time.
        return {k: v for k, v in self.__dict__.items() if v is not None}


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identifiers: Identifiers


class ResolveOut(BaseModel):
    subject_id: str
