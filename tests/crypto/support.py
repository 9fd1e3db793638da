"""A file-mode store of its own (master key in a file), and raw snapshots of ciphertext columns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from profilestore.app import create_app
from profilestore.auth import service as clients
from profilestore.auth.schemas import ClientIn, Role
from profilestore.config import Settings
from profilestore.runtime import Runtime
from tests.conftest import READER_PURPOSES, Keys, publish_notice

CIPHERTEXT_COLUMNS = {
    "consent_records": ("record_id", "evidence_ct"),
    "preferences": ("preference_id", "value_ct"),
    "identifiers": ("blind_index", "value_ct"),
}


def file_mode_settings(folder: Path, key_file: Path) -> Settings:
    return Settings(
        data_dir=folder,
        database_url=f"sqlite:///{folder}/profilestore.db",
        keystore_url=f"sqlite:///{folder}/keystore.db",
        master_key=None,
        master_key_file=key_file,
        previous_master_keys=[],
    )


def make_keys(runtime: Runtime) -> Keys:
    made = {}
    with runtime.db.transaction() as session:
        for role in Role:
            spec = ClientIn(
                name=f"own-{role.value}", role=role, purposes=READER_PURPOSES if role is Role.reader else []
            )
            made[role.value] = clients.create_client(session, spec).key
    return Keys(**made)


@contextmanager
def serving(runtime: Runtime, keys: Keys, *, publish: bool = True) -> Iterator[TestClient]:
    """A TestClient over ``runtime`` (the notice published once, by the first caller)."""
    with TestClient(create_app(runtime=runtime)) as client:
        if publish:
            publish_notice(client, keys)
        yield client


def ciphertexts(runtime: Runtime) -> dict[tuple[str, str], bytes]:
    """(table, row key) → raw ciphertext bytes of every encrypted column of the data database."""
    result = {}
    with runtime.db.engine.connect() as conn:
        for table, (key, column) in CIPHERTEXT_COLUMNS.items():
            for row_key, blob in conn.execute(text(f"SELECT {key}, {column} FROM {table}")):
                if blob is not None:
                    row = bytes(row_key).hex() if isinstance(row_key, bytes | memoryview) else str(row_key)
                    result[(table, row)] = bytes(blob)
    return result


def master_ids(runtime: Runtime) -> tuple[set[str], str, str]:
    """(master ids of all data keys, the meta's current master id, the index root's master id)."""
    with runtime.keystore.engine.connect() as conn:
        data = {str(r[0]) for r in conn.execute(text("SELECT master_key_id FROM data_keys"))}
        current, root = conn.execute(
            text("SELECT current_master_key_id, index_root_master_key_id FROM keystore_meta")
        ).one()
    return data, str(current), str(root)
