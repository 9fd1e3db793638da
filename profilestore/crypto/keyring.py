"""Master keys: the configured current one, previous ones kept for a rotation, and their ids.

A master key never touches personal data: it only wraps data keys and the blind-index root. Its
id is a fingerprint, so the key store records which master wrapped each key without holding it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import threading
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from profilestore.config import Settings

log = logging.getLogger("profilestore.crypto")

DEV_KEY_WARNING = (
    "Using a generated master key in {path}: for development only. In production set "
    "PROFILESTORE_MASTER_KEY (or PROFILESTORE_MASTER_KEY_FILE) and PROFILESTORE_ENVIRONMENT=production."
)


class MasterKeyError(RuntimeError):
    pass


def master_key_id(key: bytes) -> str:
    return hashlib.sha256(b"profilestore master key id\x00" + key).hexdigest()[:16]


def decode_master_key(text: str, *, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MasterKeyError(f"{source} is not valid base64") from exc
    if len(key) != 32:
        raise MasterKeyError(f"{source} must decode to 32 bytes, not {len(key)}")
    return key


def encode_master_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def generate_master_key() -> bytes:
    return secrets.token_bytes(32)


def write_key_file(path: Path, key: bytes) -> None:
    """Write atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_master_key(key) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def previous_file(path: Path) -> Path:
    return path.with_name(path.name + ".previous")


class MasterKeyring:
    """The master keys this process knows. In file mode it re-reads the files when the key store
    names a master it has not seen, so a running service follows a rotation done by the CLI."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._aeads: dict[str, AESGCM] = {}
        self.current_id = ""
        self._load()

    @property
    def file_mode(self) -> bool:
        return self._settings.master_key is None

    def _load(self) -> None:
        keys: dict[str, bytes] = {}
        if self._settings.master_key is not None:
            current = decode_master_key(self._settings.master_key.get_secret_value(), source="PROFILESTORE_MASTER_KEY")
        else:
            path = self._settings.resolved_master_key_file
            if not path.exists():
                if not self._settings.uses_generated_master_key:
                    raise MasterKeyError(f"master key file {path} does not exist")
                write_key_file(path, generate_master_key())
                log.warning(DEV_KEY_WARNING.format(path=path))
            current = decode_master_key(path.read_text(), source=str(path))
            prev = previous_file(path)
            if prev.exists():
                old = decode_master_key(prev.read_text(), source=str(prev))
                keys[master_key_id(old)] = old
        for secret in self._settings.previous_master_keys:
            old = decode_master_key(secret.get_secret_value(), source="PROFILESTORE_PREVIOUS_MASTER_KEYS")
            keys[master_key_id(old)] = old
        keys[master_key_id(current)] = current
        with self._lock:
            self._keys.update(keys)
            self.current_id = master_key_id(current)

    def knows(self, key_id: str) -> bool:
        if key_id not in self._keys and self.file_mode:
            self._load()
        return key_id in self._keys

    def _aead(self, key_id: str) -> AESGCM:
        aead = self._aeads.get(key_id)
        if aead is None:
            if not self.knows(key_id):
                raise MasterKeyError(f"master key {key_id} is not known to this process")
            aead = self._aeads[key_id] = AESGCM(self._keys[key_id])
        return aead

    def wrap(self, master_id: str, purpose: bytes, secret: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead(master_id).encrypt(nonce, secret, b"profilestore wrap\x00" + purpose)

    def unwrap(self, master_id: str, purpose: bytes, blob: bytes) -> bytes:
        return self._aead(master_id).decrypt(blob[:12], blob[12:], b"profilestore wrap\x00" + purpose)
