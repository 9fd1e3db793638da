"""The SQLite writer lock: one writer at a time across threads and processes, held only while a
write transaction is open, never before a session's first statement nor after its end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from profilestore.db import Database

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
