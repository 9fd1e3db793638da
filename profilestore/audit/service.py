"""The access log: every privacy action and consent change, append-only and hash-chained."""

from __future__ import annotations

import logging
import threading
from typing import Any, Required, TypedDict, Unpack, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from profilestore.audit.models import AccessLogEntry
from profilestore.db import Database
from profilestore.kit.bulk import Bulk
from profilestore.kit.chain import Canonical, ChainWriter, Verification, verify_chain
from profilestore.kit.ids import new_id
from profilestore.kit.time import utcnow

CHAIN = "access"
logger = logging.getLogger("profilestore.audit")


def _content(entry: AccessLogEntry) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "at": entry.at,
        "client_id": entry.client_id,
        "action": entry.action,
        "subject_id": entry.subject_id,
        "purpose": entry.purpose,
        "detail": entry.detail,
    }


class Access(TypedDict, total=False):
    """What an access-log entry says, as ``log`` and ``AccessRecorder.record`` take it. ``detail``
    must never hold personal values: ids, counts and field names only."""

    client_id: Required[str | None]
    action: Required[str]
    subject_id: str | None
    purpose: str | None
    detail: dict[str, Any] | None


def _new_entry(access: Access) -> dict[str, Any]:
    """An entry's content, exactly the fields its chain hash covers (``_content``)."""
    return {
        "entry_id": new_id("acc"),
        "at": utcnow(),
        "client_id": access["client_id"],
        "action": access["action"],
        "subject_id": access.get("subject_id"),
        "purpose": access.get("purpose"),
        "detail": access.get("detail") or {},
    }


def log(session: Session, **access: Unpack[Access]) -> None:
    """Append an entry in the caller's transaction: it commits (or not) with what it records."""
    content = _new_entry(access)
    link = ChainWriter(session, CHAIN).append(content)
    session.add(AccessLogEntry(**content, seq=link.seq, prev_hash=link.prev_hash, hash=link.hash))
    session.flush()


# Entries an audit answers at once: every view is logged, so a frequent visitor's log grows by
# thousands of reads a day.
PAGE_DEFAULT, PAGE_MAX = 500, 5000
SEQ_MAX = 2**63 - 1  # the log's sequence numbers are 64-bit integers


def entries_for(session: Session, subject_ids: list[str], *, after: int, limit: int) -> list[AccessLogEntry]:
    """The subjects' entries in log order, at most ``limit`` of them, from the first past ``after``
    (a ``seq``: 0 for the start; the last of a page for the next). Each subject's page is a range
    of its index, read on its own (a lineage is a few subjects), so a page costs the same however
    long the log."""
    found: list[AccessLogEntry] = []
    for subject_id in subject_ids:
        found += session.scalars(
            select(AccessLogEntry)
            .where(AccessLogEntry.subject_id == subject_id, AccessLogEntry.seq > after)
            .order_by(AccessLogEntry.seq)
            .limit(limit)
        )
    return sorted(found, key=lambda entry: entry.seq)[:limit]


def verify(session: Session) -> Verification:
    """Walk the whole access log; name the first entry whose link is broken."""
    return verify_chain(session, CHAIN, AccessLogEntry, "entry_id", _content)


_INSERT_ENTRIES = Bulk(lambda _: insert(cast(Table, AccessLogEntry.__table__)))
# Access-log rows per INSERT statement. SQLite's driver gives up the GIL and takes it back around
# each statement it steps (each row, in an ``executemany``), and every time the writer took it back
# it held up a view served meanwhile; a flush of a fifth of a second's reads (600 rows) is now two
# statements (bench/README.md, 2026-12-01, late).
_ROWS_PER_STATEMENT = 500


class AccessRecorder:
    """Collects view reads in memory and appends them to the access log in batches, so reads
    cost no write transaction (and no fsync) each. A background thread flushes every
    ``interval`` seconds; ``close()`` — called on a clean shutdown — flushes what remains."""

    def __init__(self, db: Database, interval: float = 0.2, max_batch: int = 1000) -> None:
        self._db = db
        self._interval = interval
        self._max_batch = max_batch
        self._pending: list[tuple[Any, Canonical]] = []  # (driver row, canonical form)
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one flush at a time: a flush returns only when written
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, **access: Unpack[Access]) -> None:
        entry = _new_entry(access)
        # Encoded for its hash, and converted for the driver, here, on the reading request's own
        # time: the writer's thread only numbers, hashes and inserts. Work done there holds the
        # GIL, and a view served by the same process meanwhile waits for it.
        row = _INSERT_ENTRIES.row(self._db.engine.dialect, {**entry, "seq": 0, "prev_hash": "", "hash": ""})
        recorded = (row, Canonical.of(entry))
        with self._lock:
            self._pending.append(recorded)
            full = len(self._pending) >= self._max_batch
        if full:
            self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                logger.exception("access log flush failed; entries kept for the next try")

    def flush(self) -> int:
        """Write every pending entry in one transaction; on failure they stay pending. Waits for
        a flush already under way, so whatever was recorded before the call is written after it."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                self._write(batch)
            except Exception:
                with self._lock:
                    self._pending[:0] = batch
                raise
            return len(batch)

    def _write(self, batch: list[tuple[Any, Canonical]]) -> None:
        with self._db.transaction() as session:
            links = ChainWriter(session, CHAIN).extend(canonical for _, canonical in batch)
            dialect = session.get_bind().dialect
            seq, prev_hash, hash_ = (_INSERT_ENTRIES.slot(dialect, c) for c in ("seq", "prev_hash", "hash"))
            for (row, _), link in zip(batch, links, strict=True):
                row[seq], row[prev_hash], row[hash_] = link.seq, link.prev_hash, link.hash
            # In bulk: at thousands of reads a second, ORM objects cost more than the reads.
            _INSERT_ENTRIES.execute_params(session, [row for row, _ in batch], rows_per_statement=_ROWS_PER_STATEMENT)

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
