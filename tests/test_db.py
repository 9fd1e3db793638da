"""The SQLite writer lock: one writer at a time across threads and processes, held only while a
write transaction is open, never before a session's first statement nor after its end."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from profilestore.db import Database
from profilestore.runtime import Runtime

HOLD_SECONDS = 0.6


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path}/lock.db")
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE marks (who TEXT, at REAL)"))
    yield db
    db.dispose()


def _hold_lock_in_another_process(db_path: str, seconds: float) -> subprocess.Popen[str]:
    """A process that takes the writer lock, says so, and keeps it for ``seconds``."""
    code = textwrap.dedent(
        f"""
        import time
        from profilestore.db import Database
        db = Database({f"sqlite:///{db_path}"!r})
        with db.transaction() as session:
            session.execute(__import__("sqlalchemy").text("INSERT INTO marks VALUES ('other', 0)"))
            print("holding", flush=True)
            time.sleep({seconds})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_writer_of_another_process_is_waited_for_not_failed(database: Database, tmp_path: Path) -> None:
    other = _hold_lock_in_another_process(f"{tmp_path}/lock.db", HOLD_SECONDS)
    started = time.monotonic()
    with database.transaction() as session:
        session.execute(text("INSERT INTO marks VALUES ('me', 0)"))
    waited = time.monotonic() - started
    assert other.wait(timeout=10) == 0
    assert waited >= HOLD_SECONDS * 0.7  # it queued behind the other process's transaction
    with database.read_session() as session:
        assert sorted(r[0] for r in session.execute(text("SELECT who FROM marks"))) == ["me", "other"]


def test_the_lock_is_taken_at_the_first_statement_not_when_the_session_is_made(
    database: Database, tmp_path: Path
) -> None:
    with database.transaction() as session:
        # Work before the first statement (an event batch's parsing and hashing) runs beside other
        # writers: another process can write meanwhile.
        other = _hold_lock_in_another_process(f"{tmp_path}/lock.db", 0.0)
        assert other.wait(timeout=10) == 0
        session.execute(text("INSERT INTO marks VALUES ('me', 0)"))


@pytest.mark.parametrize("ending", ["commit", "rollback", "close"])
def test_the_lock_is_given_back_when_the_transaction_ends(database: Database, ending: str) -> None:
    session = database.write_session()
    session.execute(text("INSERT INTO marks VALUES ('first', 0)"))
    getattr(session, ending)()
    if ending != "close":
        session.close()

    done = threading.Event()

    def second_writer() -> None:
        with database.transaction() as other:
            other.execute(text("INSERT INTO marks VALUES ('second', 0)"))
        done.set()

    thread = threading.Thread(target=second_writer)
    thread.start()
    assert done.wait(timeout=5), "the second writer was still waiting: the lock was not given back"
    thread.join()


def test_writers_of_one_process_take_turns(database: Database) -> None:
    inside, overlaps = [0], [0]
    guard = threading.Lock()

    def writer(name: str) -> None:
        for _ in range(20):
            with database.transaction() as session:
                session.execute(text("INSERT INTO marks VALUES (:who, 0)"), {"who": name})
                with guard:
                    inside[0] += 1
                    overlaps[0] = max(overlaps[0], inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 1
    with database.read_session() as session:
        assert session.execute(text("SELECT COUNT(*) FROM marks")).scalar_one() == 80


def test_a_transaction_that_cannot_begin_gives_the_lock_back(database: Database, tmp_path: Path) -> None:
    # Another connection that ignores the lock file holds SQLite's own write lock past the busy
    # timeout: BEGIN IMMEDIATE fails, and the writer lock must not stay taken.
    import sqlite3

    pooled = database.engine.raw_connection()  # the connection the session will get back from the pool
    pooled.driver_connection.execute("PRAGMA busy_timeout=50")  # fail fast instead of after 30 s
    pooled.close()
    rogue = sqlite3.connect(f"{tmp_path}/lock.db", isolation_level=None)
    rogue.execute("BEGIN IMMEDIATE")
    blocked = database.write_session()
    with pytest.raises(OperationalError):
        blocked.execute(text("INSERT INTO marks VALUES ('blocked', 0)"))
    blocked.close()
    rogue.execute("ROLLBACK")
    rogue.close()

    with database.transaction() as session:  # would wait forever if the lock were still held
        session.execute(text("INSERT INTO marks VALUES ('after', 0)"))


# -- checkpoints on a thread of their own -------------------------------------------------------------


def _write_pages(db: Database, rows: int = 400) -> None:
    """One write transaction of about ``rows`` pages (4 KB each): past SQLite's threshold of 1,000
    pages once written a few times, which a committing connection would checkpoint itself."""
    with db.transaction() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS pages (body BLOB)"))
        for _ in range(rows):
            session.execute(text("INSERT INTO pages VALUES (randomblob(4000))"))


def _autocheckpoint(db: Database) -> int:
    with db.read_session() as session:
        return int(session.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_while_checkpointing_commits_leave_the_log_to_the_thread(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/ck.db")
    try:
        assert _autocheckpoint(db) == 1000  # SQLite's default: a commit past 1,000 pages copies them
        db.start_checkpointing()
        assert _autocheckpoint(db) == 0
        _write_pages(db)
        data_file = tmp_path / "ck.db"
        # The thread copies the log into the database file, which grows by the rows written.
        assert _wait_for(lambda: data_file.stat().st_size > 400 * 4000)
        db.stop_checkpointing()
        assert _autocheckpoint(db) == 1000
    finally:
        db.dispose()


def test_a_commit_does_not_checkpoint_and_stopping_runs_the_last_one(tmp_path: Path) -> None:
    # A minute between a write and its checkpoint: the thread will not get to it while the test looks.
    db = Database(f"sqlite:///{tmp_path}/ck.db", checkpoint_delay=60.0)
    try:
        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE pages (body BLOB)"))
        with closing(sqlite3.connect(tmp_path / "ck.db")) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.start_checkpointing()
        data_file = tmp_path / "ck.db"
        before = data_file.stat().st_size
        for _ in range(4):  # 1,600 pages: a committing connection would have checkpointed
            _write_pages(db)
        assert data_file.stat().st_size == before  # all of it still in the log
        started = time.monotonic()
        db.stop_checkpointing()  # wakes the thread at once: no waiting out the delay
        assert time.monotonic() - started < 30
        assert data_file.stat().st_size > 1600 * 4000
        with db.read_session() as session:
            assert session.execute(text("SELECT count(*) FROM pages")).scalar_one() == 1600
    finally:
        db.dispose()


def test_the_app_checkpoints_on_its_thread_while_it_serves(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from profilestore.app import create_app
    from profilestore.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "store"))
    runtime = app.state.runtime
    runtime.migrate()
    with TestClient(app):
        assert _autocheckpoint(runtime.db) == 0
    assert _autocheckpoint(runtime.db) == 1000
    runtime.close()


def test_a_checkpoint_that_fails_is_logged_and_tried_again_at_the_next_nudge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from profilestore.db import Checkpointer

    folder = tmp_path / "not-yet"
    checkpointer = Checkpointer(folder / "late.db", delay=0.0)
    checkpointer.start()
    try:
        checkpointer.nudge()
        assert _wait_for(lambda: "checkpoint of the SQLite log failed" in caplog.text)
        folder.mkdir()
        db = Database(f"sqlite:///{folder}/late.db")
        _write_pages(db, rows=50)
        caplog.clear()
        checkpointer.nudge()
        # Now there is a file: the same thread checkpoints it (the database file grows).
        assert _wait_for(lambda: (folder / "late.db").stat().st_size > 50 * 4000)
        assert "failed" not in caplog.text
        db.dispose()
    finally:
        checkpointer.stop()


def _heads(session: Session) -> int:
    return int(session.execute(text("SELECT count(*) FROM chain_heads")).scalar_one())


def test_a_read_session_without_a_transaction_runs_postgresql_statements_each_on_its_own(runtime: Runtime) -> None:
    """Views read with ``transaction=False``: on PostgreSQL no BEGIN, so each statement is its own
    transaction (``now()``, the transaction's start, moves between them); SQLite keeps its read
    transaction, one snapshot for every statement (a commit landing between two reads is not seen)."""
    db = runtime.db
    with db.read_session(transaction=False) as session:
        if db.is_sqlite:
            before = _heads(session)
            with db.transaction() as writer:
                writer.execute(text("INSERT INTO chain_heads VALUES ('db-test', 0, '', '2026-01-01 00:00:00')"))
            assert _heads(session) == before
        else:
            first = session.execute(text("SELECT now()")).scalar_one()
            time.sleep(0.01)
            assert session.execute(text("SELECT now()")).scalar_one() > first
    with db.read_session() as session:  # the default: one transaction
        if not db.is_sqlite:
            first = session.execute(text("SELECT now()")).scalar_one()
            time.sleep(0.01)
            assert session.execute(text("SELECT now()")).scalar_one() == first


@pytest.mark.parametrize("idle_after", [0.0, 3600.0])
def test_a_pooled_connection_closed_by_the_server_is_pinged_and_replaced_once_idle(
    runtime: Runtime, idle_after: float
) -> None:
    """Connections idle for ``ping_idle_after`` seconds are pinged before use, and one the server
    closed is replaced; one in steady use is not pinged (and so, closed under it, fails once)."""
    if runtime.db.is_sqlite:
        pytest.skip("PostgreSQL's pool")
    db = Database(runtime.db.url, ping_idle_after=idle_after)
    try:
        with db.single_read() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with runtime.db.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            for _ in range(100):  # the server ends the backend shortly after
                alive = admin.exec_driver_sql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {int(pid)}")
                if alive.scalar_one() == 0:
                    break
                time.sleep(0.02)
        if idle_after:
            with pytest.raises(OperationalError), db.single_read() as conn:
                conn.exec_driver_sql("SELECT 1").scalar_one()
        with db.single_read() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
    finally:
        db.dispose()
