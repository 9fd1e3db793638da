"""Database plumbing: declarative bases, engines and sessions for the data and key-store databases.

One request is one transaction, committed before the response is sent (see ``deps.py``).

SQLite has one writer at a time. A write session takes this database's writer lock when its
transaction begins — at its first statement, not when the session is made — and gives it back
when the transaction ends, so that whatever a request does before touching the database (parsing,
validating, hashing, serialising) runs beside other writers. The lock is a thread lock plus an
advisory lock on a file beside the database, so writers of every process (service workers, the
CLI) queue on it in turn instead of meeting SQLite's busy handler, which sleeps with back-off
(tens of milliseconds per retry). Read-only sessions begin deferred and run beside writers (WAL).

A serving process copies the write-ahead log back into the database file on a thread of its own
(``Checkpointer``), not in the commit that happens to cross SQLite's threshold: that copy, and its
sync of the database file, took half of an event batch's commit, inside the writer's turn.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction, sessionmaker

from profilestore.kit.sqltypes import UTCDateTime

T = TypeVar("T")

try:  # advisory file locks; without them (Windows) writers of one process still take turns
    import fcntl
except ImportError:  # pragma: no cover - POSIX everywhere we run
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("profilestore")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A write session's connection carries this option: its BEGIN is issued by the session, after the
# writer lock is held, not by the engine hook below.
_SESSION_BEGINS = "profilestore_session_begins"
# A connection for one read statement carries this one: a single statement is its own snapshot, so
# the BEGIN and ROLLBACK around it would be two statements of pure overhead.
_SINGLE_STATEMENT = "profilestore_single_statement"


class Base(DeclarativeBase):
    """Tables of the data database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def _sqlite_file(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


# A pooled PostgreSQL connection is pinged before it is used only if it has sat idle this long
# (seconds). Pinging at every checkout (``pool_pre_ping``) cost a round trip each time, and a view
# over HTTP checks out two connections (its caller's key, then the view); a connection in steady
# use proved itself alive a moment ago. One idle through a server restart is still found out.
PING_IDLE_AFTER = 1.0


def create_db_engine(
    url: str,
    *,
    immediate: bool = False,
    autocheckpoint: Callable[[], bool] = lambda: True,
    ping_idle_after: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine for ``url``; on SQLite: WAL, full sync, foreign keys, and a busy timeout. Its
    connections checkpoint the log on commit while ``autocheckpoint()`` holds when they connect.
    Elsewhere, pooled connections idle for ``ping_idle_after`` seconds are pinged before use."""
    # Statement parameters hold ciphertexts and blind indexes: keep them out of errors and logs.
    kwargs.setdefault("hide_parameters", True)
    if not url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        _ping_when_idle(engine, PING_IDLE_AFTER if ping_idle_after is None else ping_idle_after)
        return engine

    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
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
        # Read pages through a memory map instead of read() calls into a small per-connection
        # cache: random inserts into the growing event and receipt indexes read many pages.
        cursor.execute("PRAGMA mmap_size=268435456")
        if not autocheckpoint():
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        # A log that has been copied back is cut to this size when it starts over.
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        try:
            cursor.execute("SELECT pow(2.0, 0.5)")
        except sqlite3.OperationalError:
            # SQLite built without its math functions: signal scores decay in SQL (kit/sqlexpr.py).
            dbapi_connection.create_function("pow", 2, math.pow, deterministic=True)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if not options.get(_SESSION_BEGINS) and not options.get(_SINGLE_STATEMENT):
            begin_sqlite(connection, "BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


WAL_SIZE_LIMIT = 64 * 1024 * 1024


def _ping_when_idle(engine: Engine, after: float) -> None:
    """Ping a connection the pool hands out if it has been idle ``after`` seconds, or since before
    a connection of this engine was last found dead (a restarted server has closed its brothers
    too); one that does not answer is replaced (the pool retries on ``DisconnectionError``), so a
    request never gets a connection the server closed while it sat in the pool."""
    lost = {"at": 0.0}

    @event.listens_for(engine, "invalidate")
    def _found_dead(_dbapi_connection: Any, _record: Any, exception: BaseException | None) -> None:
        if exception is not None:
            lost["at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or (time.monotonic() - idle_since < after and idle_since > lost["at"]):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("the pooled connection did not answer a ping") from exc


def read_again_if_disconnected(read: Callable[[], T]) -> T:
    """Run ``read`` (work that writes nothing); if its connection turned out dead, run it once more
    on a new one. Pooled connections are pinged only after sitting idle (``PING_IDLE_AFTER``):
    when the server restarts under load, each connection in use meets its end in a statement."""
    try:
        return read()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return read()


def begin_sqlite(connection: Connection, sql: str) -> None:
    """Begin a SQLite transaction with ``sql`` on the driver's cursor. Every read session begins
    once, and SQLAlchemy's execution path (``exec_driver_sql``) cost about 20 µs more than the
    statement itself; errors are raised as SQLAlchemy would raise them."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc
    finally:
        cursor.close()


class Checkpointer:
    """Copies a SQLite database's write-ahead log back into the database file, on a thread of
    its own, a short while after writes (``nudge``): a passive checkpoint, which never waits for
    readers or writers and never holds up either. Stopping runs a last one."""

    def __init__(self, path: Path, *, delay: float = 0.25) -> None:
        self.path = path
        self.delay = delay  # writes within this are copied together (pages they share, once)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="profilestore-checkpointer", daemon=True)
            self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                self._wake.wait()
                self._stop.wait(self.delay)  # stopping cuts it short
                self._wake.clear()
                try:
                    if connection is None:
                        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                        connection.execute("PRAGMA synchronous=FULL")
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # the file went away (a test's folder), say: the next nudge tries again
                    log.warning("checkpoint of the SQLite log failed", exc_info=True)
        finally:
            if connection is not None:
                connection.close()


class WriterLock:
    """One writer at a time on a SQLite database, across threads and processes.

    Not reentrant. ``acquire`` and ``release`` may run on different threads (FastAPI runs a
    request's dependencies and its route on pool threads of its choosing).
    """

    def __init__(self, path: Path | None) -> None:
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        if path is not None and fcntl is not None:
            self._fd = os.open(f"{path}.writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        self._thread_lock.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """Engines and session factories for one database (the data database or the key store)."""

    def __init__(self, url: str, *, checkpoint_delay: float = 0.25, **engine_kwargs: Any) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        path = _sqlite_file(url) if self.is_sqlite else None
        self._checkpointer = Checkpointer(path, delay=checkpoint_delay) if path is not None else None
        self._checkpointing = False
        autocheckpoint = self._commits_checkpoint
        self.engine = create_db_engine(url, immediate=self.is_sqlite, autocheckpoint=autocheckpoint, **engine_kwargs)
        self.read_engine = (
            create_db_engine(url, autocheckpoint=autocheckpoint, **engine_kwargs) if self.is_sqlite else self.engine
        )
        self._lock: WriterLock | None = WriterLock(path) if self.is_sqlite else None
        # Options set once on an engine of their own: set per connection, they cost a view (two
        # single reads: its caller's key, its subject's data key) more than the statements.
        self._single_reads = self.read_engine.execution_options(
            **({_SINGLE_STATEMENT: True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )
        write_bind = self.engine.execution_options(**{_SESSION_BEGINS: True}) if self.is_sqlite else self.engine
        self._writer = sessionmaker(write_bind, expire_on_commit=False, autoflush=True)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False, autoflush=True)
        # PostgreSQL reads with no transaction around them (``read_session(transaction=False)``).
        self._statement_reader = (
            self._reader if self.is_sqlite else sessionmaker(self._single_reads, expire_on_commit=False, autoflush=True)
        )
        if self._lock is not None:
            event.listen(self._writer, "after_begin", self._begin_writing)
            # Whichever comes first once the database transaction is over: commit, rollback, or
            # the end of the session's transaction (a close without either).
            event.listen(self._writer, "after_commit", self._end_writing)
            event.listen(self._writer, "after_rollback", self._end_writing)
            event.listen(self._writer, "after_transaction_end", self._end_outermost)

    def _begin_writing(self, session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
        assert self._lock is not None
        self._lock.acquire()
        try:
            begin_sqlite(connection, "BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        session.info["holds_writer_lock"] = True

    def _end_writing(self, session: Session) -> None:
        if session.info.pop("holds_writer_lock", False):
            assert self._lock is not None
            self._lock.release()
            if self._checkpointing:
                assert self._checkpointer is not None
                self._checkpointer.nudge()

    def _commits_checkpoint(self) -> bool:
        """Whether a connection made now should checkpoint in its commits (read when it connects)."""
        return not self._checkpointing

    def start_checkpointing(self) -> None:
        """Copy the log back on a thread of this process from now on, not in commits (SQLite
        files; nothing to do otherwise). For a serving process: call before it takes requests."""
        if self._checkpointer is not None and not self._checkpointing:
            self._checkpointing = True
            self._reconnect()
            self._checkpointer.start()

    def stop_checkpointing(self) -> None:
        """Back to checkpoints in commits, after a last one on the thread."""
        if self._checkpointer is not None and self._checkpointing:
            self._checkpointing = False
            self._checkpointer.stop()
            self._reconnect()

    def _reconnect(self) -> None:
        # Pooled connections keep the setting they were made with: make new ones.
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

    def _end_outermost(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            self._end_writing(session)

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the writer lock around engine-level writes (write sessions take it themselves)."""
        if self._lock is None:
            yield
            return
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    def write_session(self) -> Session:
        return self._writer()

    def read_session(self, *, transaction: bool = True) -> Session:
        """A session for reads. With ``transaction=False`` (views), PostgreSQL runs each statement
        on its own: at READ COMMITTED, the isolation it runs at, each statement reads its own
        snapshot inside a transaction too, and the BEGIN and ROLLBACK were two of a view's eight
        round trips. A session that must not see a change land between two of its statements
        needs REPEATABLE READ, not this. SQLite keeps its read transaction: there it is one
        snapshot for every statement, and costs no round trip."""
        return self._reader() if transaction else self._statement_reader()

    def single_read(self) -> Connection:
        """A connection for exactly one read statement (use it as a context manager). It runs
        without a transaction around it — it is consistent on its own — which saves SQLite two
        statements and PostgreSQL two round trips (BEGIN and ROLLBACK)."""
        return self._single_reads.connect()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
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
        self.stop_checkpointing()
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
        if self._lock is not None:
            self._lock.close()
