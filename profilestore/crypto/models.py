"""Tables of the key store, a database of its own (by default a separate SQLite file).

Deleting a subject's rows here (crypto-shredding) makes their data unreadable wherever it lies,
backups of the data database included.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from profilestore.db import NAMING_CONVENTION
from profilestore.kit.sqltypes import UTCDateTime


class KeystoreBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class DataKey(KeystoreBase):
    """A per-subject AES-256 data key, wrapped by a master key. A subject may own several after merges."""

    __tablename__ = "data_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    is_primary: Mapped[bool] = mapped_column(Boolean)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class KeystoreMeta(KeystoreBase):
    """One row: which master key new wraps must use, and the wrapped root of the blind-index key.

    The index root is random and wrapped like a data key, so rotating the master key re-wraps it
    and every blind index stays valid.
    """

    __tablename__ = "keystore_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    current_master_key_id: Mapped[str] = mapped_column(String(16))
    index_root_wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    index_root_master_key_id: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime]
