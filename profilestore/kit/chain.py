"""Hash chains for append-only logs (the consent ledger, the access log).

Each entry's hash covers its canonical content and the previous entry's hash; a head row per chain
holds the last sequence number and hash, so truncating the tail is detected as well as editing or
deleting a row. Appending locks the head row, which serialises appends to one chain: acceptable for
consent decisions, which arrive at human speed, and for the access log, which appends its reads in
batches (``ChainWriter.extend``: one head update per batch).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, String, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from profilestore.db import Base
from profilestore.kit.bulk import Bulk
from profilestore.kit.sql import rows
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


# ``json.dumps`` with options builds an encoder per call; the access log hashes thousands of
# entries a second.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_canonical)


def entry_hash(prev_hash: str, content: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical JSON of ``content``.

    Bytes (ciphertexts) enter by their own SHA-256, so the chain stays verifiable after the keys
    that could decrypt them are shredded.
    """
    body = _CANONICAL_JSON.encode(content)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Canonical:
    """An entry's canonical JSON (as ``entry_hash`` encodes ``{"seq": …, **content}``) cut where
    its sequence number goes, so that it can be encoded before the chain's head is locked: the
    access log encodes each read as it is recorded, and its writer only fills in the numbers."""

    before: str  # the keys that sort before "seq", from the opening brace
    after: str  # the keys that sort after it, to the closing brace

    @classmethod
    def of(cls, content: dict[str, Any]) -> Canonical:
        if "seq" in content:
            raise ValueError("a chain entry's content has no 'seq': the chain numbers it")
        before = _CANONICAL_JSON.encode({k: v for k, v in content.items() if k < "seq"})[:-1]
        after = _CANONICAL_JSON.encode({k: v for k, v in content.items() if k > "seq"})[1:]
        return cls(before if before == "{" else before + ",", after if after == "}" else "," + after)

    def hash(self, prev_hash: str, seq: int) -> str:
        """``entry_hash(prev_hash, {"seq": seq, **content})``."""
        return hashlib.sha256(f'{prev_hash}\n{self.before}"seq":{seq:d}{self.after}'.encode()).hexdigest()


@dataclass
class Link:
    seq: int
    prev_hash: str
    hash: str


_HEADS = cast(Table, ChainHead.__table__)
_HEAD = select(_HEADS.c.seq, _HEADS.c.hash).where(_HEADS.c.name == bindparam("name"))
# The head, locked until the transaction ends (PostgreSQL; SQLite's writer lock serialises anyway).
_LOCK_HEAD = _HEAD.with_for_update()
_CREATE_HEAD = Bulk(
    lambda dialect: (pg_insert if dialect == "postgresql" else sqlite_insert)(_HEADS).on_conflict_do_nothing()
)
_MOVE_HEAD = Bulk(
    lambda _: (
        update(_HEADS)
        .where(_HEADS.c.name == bindparam("head"))
        .values(seq=bindparam("seq"), hash=bindparam("hash"), updated_at=bindparam("updated_at"))
    )
)


class ChainWriter:
    """Appends to one chain inside the caller's transaction, holding the head row's lock. Each
    ``append`` or ``extend`` leaves the head row at the last entry it wrote."""

    def __init__(self, session: Session, name: str) -> None:
        self._session = session
        self._name = name
        found = rows(session, _LOCK_HEAD, {"name": name})
        if not found:
            # The chain's first append. Racing first appends (PostgreSQL) must not fail on its
            # primary key: insert-or-ignore, then lock whichever row won.
            _CREATE_HEAD.execute(session, [{"name": name, "seq": 0, "hash": GENESIS, "updated_at": utcnow()}])
            found = rows(session, _LOCK_HEAD, {"name": name})
        self._seq, self._hash = found[0]

    def append(self, content: dict[str, Any]) -> Link:
        return self.extend([content])[0]

    def extend(self, contents: Iterable[dict[str, Any] | Canonical]) -> list[Link]:
        """Append several entries (their content, or its ``Canonical`` form made beforehand), in
        order, and move the head once."""
        links = []
        for content in contents:
            canonical = content if isinstance(content, Canonical) else Canonical.of(content)
            prev, seq = self._hash, self._seq + 1
            self._seq, self._hash = seq, canonical.hash(prev, seq)
            links.append(Link(seq=seq, prev_hash=prev, hash=self._hash))
        if links:
            head = {"head": self._name, "seq": self._seq, "hash": self._hash, "updated_at": utcnow()}
            _MOVE_HEAD.execute(self._session, [head])
        return links


@dataclass
class Verification:
    """A walk of a chain: whether every link holds, how many records it walked, and the first that
    does not hold (its id and why). Routes answer it as it is."""

    ok: bool
    records: int
    first_bad: dict[str, Any] | None


def verify_chain(
    session: Session, name: str, model: Any, id_column: str, content: Callable[[Any], dict[str, Any]]
) -> Verification:
    """Walk the chain kept in ``model``'s table (rows with ``seq``, ``prev_hash`` and ``hash``;
    ``content(row)`` is what a row's hash covers) in sequence order; name the first bad link.

    The head is read first and only the entries up to it are walked: an append moves the head in
    the transaction that inserts its entries, so every entry up to a committed head is there to
    be read, and one that commits during the walk is past it. (Read the other way round, at READ
    COMMITTED, the head was ahead of the entries walked, and a growing chain was reported as
    missing records.) Entries past the head are looked for in one statement, which sees the head
    and the entries as of one moment: there, any is one added without moving the head."""
    found = rows(session, _HEAD, {"name": name})
    head_seq, head_hash = found[0] if found else (0, GENESIS)
    walked = session.scalars(
        select(model).where(model.seq <= head_seq).order_by(model.seq).execution_options(yield_per=1000)
    )
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for row in walked:
        entry_id, seq, prev_hash, stored = getattr(row, id_column), row.seq, row.prev_hash, row.hash
        problem = None
        if seq != expected_seq:
            problem = f"sequence gap: expected {expected_seq}, found {seq} (a record was removed)"
        elif prev_hash != expected_prev:
            problem = "previous-hash link does not match the record before it"
        elif entry_hash(prev_hash, {"seq": seq, **content(row)}) != stored:
            problem = "content does not match its hash (the record was altered)"
        if problem:
            return Verification(False, count, {"seq": seq, "id": entry_id, "reason": problem})
        expected_prev, expected_seq, count = stored, seq + 1, count + 1
    if head_seq != count or head_hash != expected_prev:
        return Verification(
            False, count, {"seq": count + 1, "id": None, "reason": "records after this point are missing"}
        )
    head_now = select(_HEADS.c.seq).where(_HEADS.c.name == name).scalar_subquery()
    past = session.execute(select(func.min(model.seq)).where(model.seq > func.coalesce(head_now, 0))).scalar()
    if past is not None:
        return Verification(
            False, count, {"seq": past, "id": None, "reason": "records past the chain's head (added without moving it)"}
        )
    return Verification(True, count, None)
