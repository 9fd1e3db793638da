"""Hash chains for append-only logs (the consent ledger, the access log).

Each entry's hash covers its canonical content and the previous entry's hash; a head row per chain
holds the last sequence number and hash, so truncating the tail is detected as well as editing or
deleting a row. Appending locks the head row, which serialises appends to one chain: acceptable for
consent decisions, which arrive at human speed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from profilestore.db import Base
from profilestore.kit.time import isoformat, utcnow

GENESIS = "0" * 64


class ChainHead(Base):
    __tablename__ = "chain_heads"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


def _canonical(value: Any) -> str:
    """The canonical text of what JSON has no form for (``json.dumps`` asks for nothing else)."""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(f"{type(value).__name__} has no canonical form in a chain entry")


def entry_hash(prev_hash: str, content: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical JSON of ``content``.

    Bytes (ciphertexts) enter by their own SHA-256, so the chain stays verifiable after the keys
    that could decrypt them are shredded.
    """
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_canonical)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass
class Link:
    seq: int
    prev_hash: str
    hash: str


class ChainWriter:
    """Appends to one chain inside the caller's transaction, holding the head row's lock."""

    def __init__(self, session: Session, name: str) -> None:
        self._session = session
        # Create the head on the chain's first append. Racing first appends (PostgreSQL) must not
        # fail on its primary key: insert-or-ignore, then lock whichever row won.
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(
            insert(ChainHead).values(name=name, seq=0, hash=GENESIS, updated_at=utcnow()).on_conflict_do_nothing()
        )
        self._head = session.scalars(select(ChainHead).where(ChainHead.name == name).with_for_update()).one()

    def append(self, content: dict[str, Any]) -> Link:
        prev = self._head.hash
        seq = self._head.seq + 1
        digest = entry_hash(prev, {"seq": seq, **content})
        self._head.seq, self._head.hash, self._head.updated_at = seq, digest, utcnow()
        return Link(seq=seq, prev_hash=prev, hash=digest)


@dataclass
class Verification:
    ok: bool
    records: int
    first_bad: dict[str, Any] | None


def verify_chain(
    session: Session, name: str, entries: Iterable[tuple[str, int, str, str, dict[str, Any]]]
) -> Verification:
    """Walk ``(entry_id, seq, prev_hash, hash, content)`` in sequence order; name the first bad link."""
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for entry_id, seq, prev_hash, stored, content in entries:
        problem = None
        if seq != expected_seq:
            problem = f"sequence gap: expected {expected_seq}, found {seq} (a record was removed)"
        elif prev_hash != expected_prev:
            problem = "previous-hash link does not match the record before it"
        elif entry_hash(prev_hash, {"seq": seq, **content}) != stored:
            problem = "content does not match its hash (the record was altered)"
        if problem:
            return Verification(False, count, {"seq": seq, "id": entry_id, "reason": problem})
        expected_prev, expected_seq, count = stored, seq + 1, count + 1
    head = session.get(ChainHead, name)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    if head_seq != count or head_hash != expected_prev:
        return Verification(
            False, count, {"seq": count + 1, "id": None, "reason": "records after this point are missing"}
        )
    return Verification(True, count, None)
