"""Master-key rotation re-wraps every data key (and the blind-index root) without touching a data
row, in file mode and in environment mode, while services keep working; a wrong master key is
refused at start-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import event
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from profilestore.cli import app as cli
from profilestore.config import Settings
from profilestore.crypto.keyring import (
    MasterKeyError,
    decode_master_key,
    encode_master_key,
    generate_master_key,
    master_key_id,
    previous_file,
    write_key_file,
)
from profilestore.crypto.rotation import rotate_master_key
from profilestore.crypto.service import rotate
from profilestore.identity import service as identity
from profilestore.preferences import service as preferences
from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body, row_counts
from tests.crypto.support import ciphertexts, file_mode_settings, make_keys, master_ids, serving
from tests.identity.support import (
    consents_of,
    keystore_rows,
    post_consent,
    post_preferences,
    pref,
    resolved_id,
)

ADA = {"email": "ada@example.com", "phone": "+4915112345678"}
BOB = {"email": "bob@example.com", "anonymous_id": "cookie-bob"}


def _populate(api: TestClient, keys: Keys) -> tuple[str, str]:
    """Two subjects with consent (evidence), identifiers and preferences."""
    ada = post_consent(api, keys, identifiers=ADA, purposes={"personalize": "granted"})["subject_id"]
    bob = post_consent(api, keys, identifiers=BOB, purposes={"marketing": "granted"})["subject_id"]
    for who, colour in ((ADA, "red"), (BOB, "blue")):
        assert post_preferences(api, keys, who, [pref("colour", colour)]).json()["stored"] == 1
    return ada, bob


def _assert_readable(api: TestClient, keys: Keys, runtime: Runtime, ada: str) -> None:
    history = consents_of(api, keys, ada)["history"]
    assert [h["evidence"]["user_agent"] for h in history] == ["Mozilla/5.0 (X11)"]
    assert resolved_id(api, keys, {"email": "ada@example.com"}) == ada
    with runtime.db.transaction(write=False) as session:
        cipher = runtime.vault.cipher(ada, identity.lineage(session, ada))
        assert [(p.key, p.value) for p in preferences.current(session, cipher)] == [("colour", "red")]


def _key_master(runtime: Runtime, subject_id: str) -> str:
    (master,) = {m for _, owner, m in keystore_rows(runtime) if owner == subject_id}
    return master


def _unchanged(before: dict[tuple[str, str], bytes], after: dict[tuple[str, str], bytes]) -> None:
    assert before
    assert {k: after.get(k) for k in before} == before


def _same_stores(settings: Settings, master_key: str, previous: list[str] | None = None) -> Settings:
    """Settings of the same two databases under another (environment-mode) master key."""
    return Settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        keystore_url=settings.keystore_url,
        master_key=SecretStr(master_key),
        previous_master_keys=[SecretStr(k) for k in previous or []],
    )


@pytest.fixture
def file_store(tmp_path: Path) -> Any:
    """A migrated file-mode store of its own (fresh SQLite pair, master key in a file)."""
    key_file = tmp_path / "secrets" / "master.key"
    write_key_file(key_file, generate_master_key())
    settings = file_mode_settings(tmp_path, key_file)
    runtime = Runtime.from_settings(settings)
    runtime.migrate()
    keys = make_keys(runtime)
    yield settings, runtime, keys
    runtime.close()


def test_file_mode_rotation_rewraps_every_key_leaves_data_alone_and_a_running_service_follows(
    file_store: Any,
) -> None:
    settings, original, keys = file_store
    key_file: Path = settings.master_key_file
    old_id = master_key_id(decode_master_key(key_file.read_text(), source="test"))
    with serving(original, keys) as api:
        ada, bob = _populate(api, keys)
        assert master_ids(original) == ({old_id}, old_id, old_id)
        before = ciphertexts(original)
        index_before = original.vault.blind_index("email", "ada@example.com")

        # Rotate from another runtime (as the CLI would), and act through the running service in
        # the window between the key store naming the new master and the re-wrap of old keys.
        rotator = Runtime.from_settings(settings)
        during: dict[str, Any] = {}

        def in_the_window(session: Session) -> None:
            if getattr(session.bind, "pool", None) is not rotator.keystore.engine.pool or during:
                return
            data, current, _ = master_ids(original)
            during["state"] = (data, current)
            during["history"] = consents_of(api, keys, ada)["history"]
            during["carol"] = post_consent(api, keys, email="carol@example.com")["subject_id"]

        event.listen(Session, "after_commit", in_the_window)
        try:
            report = rotate_master_key(rotator)
        finally:
            event.remove(Session, "after_commit", in_the_window)
            rotator.close()

        new_id = report.master_key_id
        assert new_id != old_id
        assert during["state"] == ({old_id}, new_id)  # the window was really hit
        assert during["history"][0]["evidence"]["user_agent"] == "Mozilla/5.0 (X11)"
        assert master_key_id(decode_master_key(key_file.read_text(), source="test")) == new_id
        assert not previous_file(key_file).exists()
        assert report.rewrapped == 2  # ada and bob; carol's key was born under the new master
        assert master_ids(original) == ({new_id}, new_id, new_id)
        assert len(keystore_rows(original)) == 3
        _unchanged(before, ciphertexts(original))

        # The service built before the rotation (old key in memory) keeps reading and writing.
        _assert_readable(api, keys, original, ada)
        dave = post_consent(api, keys, email="dave@example.com", purposes={"personalize": "granted"})["subject_id"]
        assert post_preferences(api, keys, {"email": "dave@example.com"}, [pref("colour", "teal")]).status_code == 201
        assert _key_master(original, dave) == new_id
        assert _key_master(original, during["carol"]) == new_id
        assert consents_of(api, keys, bob)["history"][0]["evidence"] is not None

    # A process started afresh holds only the new key, and the blind index has not moved.
    fresh = Runtime.from_settings(settings)
    try:
        fresh.migrate()
        assert fresh.vault.blind_index("email", "ada@example.com") == index_before
        with serving(fresh, keys, publish=False) as api:
            _assert_readable(api, keys, fresh, ada)
    finally:
        fresh.close()


def test_file_mode_rotation_to_a_given_key_file_uses_that_key(file_store: Any, tmp_path: Path) -> None:
    settings, runtime, keys = file_store
    with serving(runtime, keys) as api:
        ada, _ = _populate(api, keys)
    before = ciphertexts(runtime)
    chosen = generate_master_key()
    chosen_file = tmp_path / "chosen.key"
    write_key_file(chosen_file, chosen)
    report = rotate_master_key(runtime, chosen_file)
    assert report.master_key_id == master_key_id(chosen)
    assert decode_master_key(settings.master_key_file.read_text(), source="test") == chosen
    assert master_ids(runtime) == ({master_key_id(chosen)}, master_key_id(chosen), master_key_id(chosen))
    _unchanged(before, ciphertexts(runtime))
    with serving(runtime, keys, publish=False) as api:
        _assert_readable(api, keys, runtime, ada)


def test_env_mode_rotation_rewraps_every_key_and_the_new_key_alone_then_reads_everything(
    api: TestClient, keys: Keys, runtime: Runtime, settings: Settings, master_key: str
) -> None:
    ada, bob = _populate(api, keys)
    old_id = master_key_id(decode_master_key(master_key, source="test"))
    before = ciphertexts(runtime)
    index_before = runtime.vault.blind_index("email", "ada@example.com")
    new_key = encode_master_key(generate_master_key())
    new_id = master_key_id(decode_master_key(new_key, source="test"))

    # Deploy new + previous, then rotate.
    rotating = Runtime.from_settings(_same_stores(settings, new_key, previous=[master_key]))
    try:
        rotating.migrate()
        with pytest.raises(ValueError, match="file mode"):
            rotate_master_key(rotating, settings.data_dir / "whatever.key")
        report = rotate_master_key(rotating)
    finally:
        rotating.close()
    assert (report.master_key_id, report.rewrapped) == (new_id, 2)
    assert master_ids(runtime) == ({new_id}, new_id, new_id)
    _unchanged(before, ciphertexts(runtime))

    # Drop the old key: everything still reads, new keys are wrapped by the new master.
    new_only = Runtime.from_settings(_same_stores(settings, new_key))
    try:
        new_only.migrate()
        assert new_only.vault.blind_index("email", "ada@example.com") == index_before
        with serving(new_only, keys, publish=False) as fresh_api:
            _assert_readable(fresh_api, keys, new_only, ada)
            assert consents_of(fresh_api, keys, bob)["history"][0]["evidence"] is not None
            carol = post_consent(fresh_api, keys, email="carol@example.com")["subject_id"]
        assert _key_master(new_only, carol) == new_id
    finally:
        new_only.close()

    # A process still on the old key alone may not slip a key in under the old master.
    counts = row_counts(runtime)
    stale = api.post("/v1/consents", headers=keys.header("collector"), json=consent_body(email="erin@example.com"))
    assert stale.status_code == 503, stale.text
    assert row_counts(runtime) == counts
    assert {m for _, _, m in keystore_rows(runtime)} == {new_id}

    # And restarting on the old key is refused, naming both masters.
    old_only = Runtime.from_settings(_same_stores(settings, master_key))
    try:
        with pytest.raises(MasterKeyError) as refused:
            old_only.migrate()
    finally:
        old_only.close()
    assert new_id in str(refused.value) and old_id in str(refused.value)


def test_a_master_key_that_does_not_protect_the_key_store_is_refused_at_start(
    runtime: Runtime, settings: Settings, master_key: str
) -> None:
    wrong = encode_master_key(generate_master_key())
    impostor = Runtime.from_settings(_same_stores(settings, wrong))
    try:
        with pytest.raises(MasterKeyError) as refused:
            impostor.migrate()
    finally:
        impostor.close()
    message = str(refused.value)
    assert "not the one that protects this key store" in message
    assert master_key_id(decode_master_key(master_key, source="test")) in message
    assert master_key_id(decode_master_key(wrong, source="test")) in message
    assert wrong not in message and master_key not in message


def test_a_key_file_that_does_not_fit_the_key_store_is_refused(file_store: Any, tmp_path: Path) -> None:
    settings, _, _ = file_store
    other_file = tmp_path / "other.key"
    write_key_file(other_file, generate_master_key())
    other = Runtime.from_settings(file_mode_settings(settings.data_dir, other_file))
    try:
        with pytest.raises(MasterKeyError, match="not the one that protects"):
            other.migrate()
    finally:
        other.close()


def test_an_explicit_key_file_that_is_missing_is_refused_not_generated(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "master.key"
    with pytest.raises(MasterKeyError, match="does not exist"):
        Runtime.from_settings(file_mode_settings(tmp_path, missing))
    assert not missing.exists()


def test_rotating_to_a_master_key_that_is_not_loaded_changes_nothing(runtime: Runtime) -> None:
    before = master_ids(runtime)
    with pytest.raises(MasterKeyError):
        rotate(runtime.vault, "0123456789abcdef")
    assert master_ids(runtime) == before


def test_the_keys_rotate_command_rotates_a_file_mode_store(file_store: Any, tmp_path: Path) -> None:
    settings, runtime, keys = file_store
    with serving(runtime, keys) as api:
        ada, _ = _populate(api, keys)
    before = ciphertexts(runtime)
    key_file: Path = settings.master_key_file
    env = {
        "PROFILESTORE_DATA_DIR": str(tmp_path),
        "PROFILESTORE_DATABASE_URL": settings.database_url,
        "PROFILESTORE_KEYSTORE_URL": settings.keystore_url,
        "PROFILESTORE_MASTER_KEY_FILE": str(key_file),
        "PROFILESTORE_MASTER_KEY": None,
        "PROFILESTORE_PREVIOUS_MASTER_KEYS": None,
    }
    runner = CliRunner()

    generated = runner.invoke(cli, ["keys", "rotate"], env=env)
    assert generated.exit_code == 0, generated.output
    found = re.search(r"re-wrapped (\d+) data keys under master key ([0-9a-f]{16})", generated.output)
    assert found is not None, generated.output
    assert found.group(1) == "2"
    new_id = found.group(2)
    assert master_key_id(decode_master_key(key_file.read_text(), source="test")) == new_id
    assert master_ids(runtime) == ({new_id}, new_id, new_id)

    chosen = generate_master_key()
    chosen_file = tmp_path / "chosen.key"
    write_key_file(chosen_file, chosen)
    given = runner.invoke(cli, ["keys", "rotate", "--new-key-file", str(chosen_file)], env=env)
    assert given.exit_code == 0, given.output
    assert master_key_id(chosen) in given.output
    assert decode_master_key(key_file.read_text(), source="test") == chosen
    assert master_ids(runtime) == ({master_key_id(chosen)}, master_key_id(chosen), master_key_id(chosen))
    assert not previous_file(key_file).exists()
    _unchanged(before, ciphertexts(runtime))
    with serving(runtime, keys, publish=False) as api:
        _assert_readable(api, keys, runtime, ada)
