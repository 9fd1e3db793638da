"""``profilestore keys rotate``: move every data key to a new master key.

File mode (the embedded default, or PROFILESTORE_MASTER_KEY_FILE): a new key is generated (or read
from ``--new-key-file``) and written to the key file, the old one kept beside it as
``<file>.previous`` until every key is re-wrapped, then removed. Running services re-read the
files when the key store names a master they do not hold, so they follow without a restart.

Environment mode (PROFILESTORE_MASTER_KEY): deploy the new key as PROFILESTORE_MASTER_KEY with the
old one in PROFILESTORE_PREVIOUS_MASTER_KEYS, then run this; afterwards drop the old key.
"""

from __future__ import annotations

from pathlib import Path

from profilestore.crypto.keyring import (
    MasterKeyring,
    decode_master_key,
    generate_master_key,
    master_key_id,
    previous_file,
    write_key_file,
)
from profilestore.crypto.service import RotationReport, Vault, rotate
from profilestore.runtime import Runtime


def rotate_master_key(runtime: Runtime, new_key_file: Path | None = None) -> RotationReport:
    vault: Vault = runtime.vault
    keyring: MasterKeyring = vault.keyring
    if not keyring.file_mode:
        if new_key_file is not None:
            raise ValueError("--new-key-file is for file mode; with PROFILESTORE_MASTER_KEY, deploy the new key")
        return rotate(vault, keyring.current_id)

    path = runtime.settings.resolved_master_key_file
    new_key = (
        decode_master_key(new_key_file.read_text(), source=str(new_key_file)) if new_key_file else generate_master_key()
    )
    old_text = path.read_text()
    if master_key_id(decode_master_key(old_text, source=str(path))) != master_key_id(new_key):
        previous = previous_file(path)
        write_key_file(previous, decode_master_key(old_text, source=str(path)))
        write_key_file(path, new_key)
    report = rotate(vault, master_key_id(new_key))
    previous_file(path).unlink(missing_ok=True)
    return report
