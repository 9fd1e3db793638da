"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType, TypeDecorator


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime passed to the database")
        value = value.astimezone(UTC)
    return value


@lru_cache(maxsize=4096)
def _sqlite_text(value: datetime | None) -> str | None:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC: SQLAlchemy's SQLite storage format, so rows written
    either way compare and sort as text, and ``julianday()`` reads them in SQL. Memoised: an event
    batch binds the same few instants (received at, grant epochs) thousands of times."""
    if value is None:
        return None
    return _to_utc(value).isoformat(" ", "microseconds")[:26]


def _sqlite_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value + "+00:00")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp.

    PostgreSQL stores ``timestamptz``; SQLite has no zones, so values are stored as UTC text and
    handed back aware. Naive datetimes are refused on the way in: they are always a bug here.

    On SQLite the conversion is done here in one C-level call each way, instead of SQLAlchemy's
    generic SQLite ``DATETIME`` processing: event batches bind thousands of timestamps, and the
    generic path cost about twice as much per value.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        return None if value is None else _to_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def unconverted(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` as the driver returns it, with no result processing: for reads that fetch many
    rows and keep few, which convert only what they keep (``timestamp_reader``)."""
    return type_coerce(column, NullType())


@lru_cache(maxsize=8)
def timestamp_reader(dialect: Dialect) -> Callable[[Any], datetime]:
    """What ``UTCDateTime`` does to a fetched value on ``dialect``, for values fetched
    ``unconverted``."""
    process = UTCDateTime().result_processor(dialect, None)
    assert process is not None
    return process
