"""The vault: per-subject data keys in the key store, AEAD encryption bound to its row, and the
keyed blind index used to look identifiers up without storing them in clear.

Ciphertext layout: ``0x01 | key id (16 bytes) | nonce (12) | AES-256-GCM ciphertext and tag``.
The associated data names the table, column, subject and row, so a ciphertext copied into another
row, column or subject fails to decrypt instead of yielding someone else's data.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from profilestore.crypto.keyring import MasterKeyError, MasterKeyring
from profilestore.crypto.models import DataKey, KeystoreMeta
from profilestore.db import Database
from profilestore.kit.errors import Unavailable
from profilestore.kit.sql import fetch
from profilestore.kit.time import utcnow

VERSION = b"\x01"
MIN_CIPHERTEXT = 1 + 16 + 12 + 16  # version, key id, nonce, tag (an empty plaintext)
INDEX_ROOT_PURPOSE = b"blind-index-root"


class DecryptionError(Exception):
    """A ciphertext did not authenticate: wrong row, wrong subject, tampered, or key shredded."""


def _associated_data(table: str, column: str, subject_id: str, row_key: str) -> bytes:
    return f"profilestore:v1|{table}|{column}|{subject_id}|{row_key}".encode()


@dataclass
class SubjectCipher:
    """Encrypts and decrypts one subject's values. New values use the subject's primary key;
    keys inherited through merges still decrypt what they protected."""

    subject_id: str
    primary_key_id: str
    keys: dict[str, bytes] = field(repr=False)
    _aeads: dict[str, AESGCM] = field(default_factory=dict, repr=False)
    _by_raw_id: dict[bytes, AESGCM] = field(default_factory=dict, repr=False)  # as ciphertexts name them

    def _aead(self, key_id: str) -> AESGCM | None:
        aead = self._aeads.get(key_id)
        if aead is None and key_id in self.keys:
            aead = self._aeads[key_id] = AESGCM(self.keys[key_id])
        return aead

    def encrypt(self, table: str, column: str, row_key: str, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        aead = self._aead(self.primary_key_id)
        assert aead is not None
        sealed = aead.encrypt(nonce, plaintext, _associated_data(table, column, self.subject_id, row_key))
        return self._header + nonce + sealed

    @cached_property
    def _header(self) -> bytes:
        return VERSION + bytes.fromhex(self.primary_key_id)

    def as_subject(self, subject_id: str) -> SubjectCipher:
        """The same keys, bound to another subject id: for rows that keep the id of a subject that
        was merged into this one (ledger records never move)."""
        return SubjectCipher(subject_id, self.primary_key_id, self.keys, self._aeads)

    def decrypt(self, table: str, column: str, row_key: str, blob: bytes) -> bytes:
        return self._open(_associated_data(table, column, self.subject_id, row_key), blob)

    def opener(self, table: str, column: str) -> Callable[[str, bytes], bytes]:
        """``decrypt`` for many rows of one table and column (a view opens dozens of values): the
        associated data's fixed part is built once."""
        fixed = _associated_data(table, column, self.subject_id, "")
        return lambda row_key, blob: self._open(fixed + row_key.encode(), blob)

    def _open(self, associated_data: bytes, blob: bytes) -> bytes:
        if blob[:1] != VERSION:
            raise DecryptionError("unknown ciphertext version")
        if len(blob) < MIN_CIPHERTEXT:
            raise DecryptionError("ciphertext is truncated")
        raw_id = blob[1:17]
        aead = self._by_raw_id.get(raw_id)
        if aead is None:
            aead = self._aead(raw_id.hex())
            if aead is None:
                raise DecryptionError("the data key is not held by this subject (shredded or foreign)")
            self._by_raw_id[raw_id] = aead
        try:
            return aead.decrypt(blob[17:29], blob[29:], associated_data)
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not belong to this row") from exc


_KEYS_OF = select(
    DataKey.key_id, DataKey.subject_id, DataKey.is_primary, DataKey.master_key_id, DataKey.wrapped_key
).where(DataKey.subject_id.in_(bindparam("subjects", expanding=True)))


def _insert_ignore(session: Session, table: type[KeystoreMeta], values: dict[str, object]) -> None:
    dialect = session.get_bind().dialect.name
    factory = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(factory(table).values(**values).on_conflict_do_nothing())


class Vault:
    """Data keys and the blind index. Key-store writes commit in their own short transactions,
    before the data that depends on them: a failed request leaves at most an unused key behind."""

    def __init__(self, keystore: Database, keyring: MasterKeyring) -> None:
        self.keystore = keystore
        self.keyring = keyring
        self._index_key: bytes | None = None

    # -- setup -----------------------------------------------------------------------------------

    def initialise(self) -> None:
        """Create the key-store metadata (the blind-index root) once; safe to race."""
        with self.keystore.transaction() as session:
            if session.get(KeystoreMeta, 1) is None:
                root = secrets.token_bytes(32)
                current = self.keyring.current_id
                _insert_ignore(
                    session,
                    KeystoreMeta,
                    {
                        "id": 1,
                        "current_master_key_id": current,
                        "index_root_wrapped": self.keyring.wrap(current, INDEX_ROOT_PURPOSE, root),
                        "index_root_master_key_id": current,
                        "updated_at": utcnow(),
                    },
                )
        self._index_key = None
        self.index_key  # noqa: B018 - proves now, not at the first request, that our master key fits

    def _meta(self, session: Session, *, lock: bool = False) -> KeystoreMeta:
        query = select(KeystoreMeta).where(KeystoreMeta.id == 1)
        if lock and session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        meta = session.scalars(query).one_or_none()
        if meta is None:
            raise Unavailable("the key store is not initialised: run `profilestore migrate`")
        return meta

    # -- blind index -----------------------------------------------------------------------------

    @property
    def index_key(self) -> bytes:
        # The root never changes (rotation re-wraps it), so deriving once per process is safe.
        if self._index_key is None:
            with self.keystore.transaction(write=False) as session:
                meta = self._meta(session)
            if not self.keyring.knows(meta.index_root_master_key_id):
                raise MasterKeyError(
                    "the configured master key is not the one that protects this key store "
                    f"(it expects master key {meta.index_root_master_key_id}, this process holds "
                    f"{self.keyring.current_id})"
                )
            root = self.keyring.unwrap(meta.index_root_master_key_id, INDEX_ROOT_PURPOSE, meta.index_root_wrapped)
            self._index_key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"profilestore blind index v1"
            ).derive(root)
        return self._index_key

    def blind_index(self, kind: str, normalised: str) -> bytes:
        """HMAC-SHA256 of the kind and the normalised value: equal inputs, equal index; no value."""
        return hmac.digest(self.index_key, f"{kind}\x00{normalised}".encode(), "sha256")

    # -- data keys -------------------------------------------------------------------------------

    def create_subject_key(self, subject_id: str) -> SubjectCipher:
        raw = secrets.token_bytes(32)
        key_id = secrets.token_hex(16)
        with self.keystore.transaction() as session:
            master = self._meta(session, lock=True).current_master_key_id
            session.add(
                DataKey(
                    key_id=key_id,
                    subject_id=subject_id,
                    is_primary=True,
                    wrapped_key=self._wrap_data_key(master, key_id, raw),
                    master_key_id=master,
                    created_at=utcnow(),
                )
            )
        return SubjectCipher(subject_id, key_id, {key_id: raw})

    def _wrap_data_key(self, master: str, key_id: str, raw: bytes) -> bytes:
        if not self.keyring.knows(master):
            raise Unavailable("the key store names a master key this process does not hold; restart it")
        return self.keyring.wrap(master, key_id.encode(), raw)

    def cipher(self, subject_id: str, lineage: Iterable[str] = ()) -> SubjectCipher:
        """The cipher of a subject: its own primary key for new values, plus the keys of every
        subject merged into it (``lineage``), whose ciphertexts it has inherited."""
        return self.ciphers({subject_id: lineage})[subject_id]

    def ciphers(self, lineages: dict[str, Iterable[str]]) -> dict[str, SubjectCipher]:
        """Ciphers of several subjects in one key-store query."""
        owner = {sid: sid for sid in lineages}
        for sid, lineage in lineages.items():
            owner.update({member: sid for member in lineage})
        keys: dict[str, dict[str, bytes]] = {sid: {} for sid in lineages}
        primary: dict[str, str] = {}
        # A plain connection, not a session: every view and batch comes here, and the key store is
        # read, never cached, so that a shredded key is gone for every process at once.
        with self.keystore.single_read() as connection:
            rows = fetch(connection, _KEYS_OF, {"subjects": sorted(owner)})
        for key_id, subject_id, is_primary, master_key_id, wrapped_key in rows:
            sid = owner[subject_id]
            keys[sid][key_id] = self.keyring.unwrap(master_key_id, key_id.encode(), wrapped_key)
            if is_primary and subject_id == sid:
                primary[sid] = key_id
        missing = sorted(set(lineages) - set(primary))
        if missing:
            raise DecryptionError("a subject has no data key (erased, or its key was never created)")
        return {sid: SubjectCipher(sid, primary[sid], keys[sid]) for sid in lineages}

    def shred(self, subject_ids: Iterable[str]) -> int:
        """Delete every data key of the subjects: all their ciphertexts become unreadable."""
        with self.keystore.transaction() as session:
            result = session.execute(delete(DataKey).where(DataKey.subject_id.in_(sorted(set(subject_ids)))))
            return int(getattr(result, "rowcount", 0) or 0)


@dataclass
class RotationReport:
    master_key_id: str
    rewrapped: int


def rotate(vault: Vault, new_master_id: str, *, batch: int = 500) -> RotationReport:
    """Re-wrap every data key (and the blind-index root) under ``new_master_id``; data rows are not
    touched. Safe beside running services:

    1. the key-store metadata names the new master first, so every key created from then on is
       wrapped by it (services read that row, under a share lock, in the transaction that inserts
       a key — they cannot slip a key in under the old master unseen);
    2. then keys still under any other master are re-wrapped in batches, each its own transaction.

    Services keep unwrapping with whichever master a key names, so reads work throughout.
    """
    keyring = vault.keyring
    if not keyring.knows(new_master_id):
        raise MasterKeyError(f"master key {new_master_id} is not loaded")
    with vault.keystore.transaction() as session:
        meta = session.scalars(select(KeystoreMeta).where(KeystoreMeta.id == 1).with_for_update()).one()
        root = keyring.unwrap(meta.index_root_master_key_id, INDEX_ROOT_PURPOSE, meta.index_root_wrapped)
        meta.index_root_wrapped = keyring.wrap(new_master_id, INDEX_ROOT_PURPOSE, root)
        meta.index_root_master_key_id = new_master_id
        meta.current_master_key_id = new_master_id
        meta.updated_at = utcnow()
    count = 0
    while True:
        with vault.keystore.transaction() as session:
            rows = session.scalars(
                select(DataKey).where(DataKey.master_key_id != new_master_id).limit(batch).with_for_update()
            ).all()
            for row in rows:
                raw = keyring.unwrap(row.master_key_id, row.key_id.encode(), row.wrapped_key)
                row.wrapped_key = keyring.wrap(new_master_id, row.key_id.encode(), raw)
                row.master_key_id = new_master_id
            count += len(rows)
        if not rows:
            return RotationReport(new_master_id, count)
