"""Database plumbing: declarative bases, engines and sessions for the data and key-store databases.

One request is one transaction, committed before the response is sent (see ``app.py``). On SQLite,
sessions that write take the write lock up front (``BEGIN IMMEDIATE``) so that two writers never
deadlock upgrading a read lock; read-only sessions begin deferred and run beside them under WAL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from profilestore.kit.sqltypes import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Tables of the data database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_db_engine(url: str, *, immediate: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``; on SQLite: WAL, full sync, foreign keys, and a busy timeout."""
    # Statement parameters hold ciphertexts and blind indexes: keep them out of errors and logs.
    kwargs.setdefault("hide_parameters", True)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, **kwargs)

    _prepare_sqlite_file(url)
    engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Engines and session factories for one database (the data database or the key store)."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = create_db_engine(url, immediate=self.is_sqlite, **engine_kwargs)
        self.read_engine = create_db_engine(url, **engine_kwargs) if self.is_sqlite else self.engine
        self._writer = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False, autoflush=True)
        # SQLite has one writer at a time. Writers of this process queue on a lock instead of
        # meeting SQLite's busy handler, which sleeps with back-off (tens of ms per retry) and
        # turned 8 concurrent consent posts into ~50/s. Other processes (the CLI) still meet the
        # busy timeout, which stays as the fallback.
        self._write_lock: threading.Lock | None = threading.Lock() if self.is_sqlite else None

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold this process's turn to write (SQLite); a no-op on PostgreSQL."""
        if self._write_lock is None:
            yield
            return
        with self._write_lock:
            yield

    def write_session(self) -> Session:
        return self._writer()

    def read_session(self) -> Session:
        return self._reader()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session committed on success and rolled back on error (for the CLI and jobs)."""
        with self.writer() if write else nullcontext():
            session = self.write_session() if write else self.read_session()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
