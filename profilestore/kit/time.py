"""Time is explicit: every timestamp is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes rather than guess their zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp has no time zone")
    return value.astimezone(UTC)


def isoformat(value: datetime) -> str:
    """Canonical text form (microseconds, ``+00:00``), stable across databases: used in hashes."""
    return as_utc(value).isoformat(timespec="microseconds")
