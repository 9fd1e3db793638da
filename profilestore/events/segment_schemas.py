"""The Segment Tracking API's message shapes, as sent by analytics.js, segment-analytics-python
and RudderStack SDKs. Unknown fields are allowed (the spec grows); known ones are typed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator


class SegmentContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    consent: dict[str, Any] | None = None
    ip: str | None = Field(default=None, max_length=64)
    userAgent: str | None = Field(default=None, max_length=1000)
    locale: str | None = Field(default=None, max_length=35)


MessageType = Literal["track", "page", "screen", "identify", "alias", "group"]

# SDKs accept numeric user ids and send them as JSON numbers: read as text, documented as either.
SegmentId = Annotated[
    str | None,
    Field(default=None, max_length=512),
    WithJsonSchema({"anyOf": [{"type": "string", "maxLength": 512}, {"type": "integer"}, {"type": "null"}]}),
]


class SegmentMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: MessageType
    messageId: str | None = Field(default=None, min_length=1, max_length=200)
    userId: SegmentId = None
    anonymousId: SegmentId = None
    timestamp: AwareDatetime | None = None
    originalTimestamp: AwareDatetime | None = None
    sentAt: AwareDatetime | None = None
    event: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    previousId: SegmentId = None
    groupId: SegmentId = None
    context: SegmentContext | None = None

    @field_validator("userId", "anonymousId", "previousId", "groupId", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # SDKs accept numeric user ids and send them as JSON numbers.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SegmentCall(SegmentMessage):
    """A single call's body (``/v1/track`` …), for the API's documentation: the path gives the type."""

    type: Any = Field(default=None, description="ignored: the path gives the call's type")


class SegmentBatch(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[SegmentMessage] = Field(min_length=1)
    context: SegmentContext | None = None
    sentAt: AwareDatetime | None = None
    writeKey: str | None = Field(default=None, max_length=200)


class SegmentAnswer(BaseModel):
    success: bool
    accepted: int
    duplicates: int
    dropped: dict[str, int]
