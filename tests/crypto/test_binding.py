"""Ciphertexts are bound to their table, column, subject and row; the blind index is keyed,
deterministic and kind-separated; shredding a subject's keys makes its data unreadable."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import bindparam, select, text

from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.crypto.keyring import encode_master_key, generate_master_key
from profilestore.crypto.service import DecryptionError, SubjectCipher
from profilestore.identity import service as identity
from profilestore.identity.models import Identifier
from profilestore.preferences import service as preferences
from profilestore.runtime import Runtime
from tests.conftest import Keys
from tests.identity.support import consents_of, post_consent, post_preferences, pref

ADA, BOB = {"email": "ada@example.com"}, {"email": "bob@example.com"}


def _read_preferences(runtime: Runtime, subject_id: str) -> dict[str, Any]:
    with runtime.db.transaction(write=False) as session:
        cipher = runtime.vault.cipher(subject_id, identity.lineage(session, subject_id))
        return {p.key: p.value for p in preferences.current(session, cipher)}


def _read_history(runtime: Runtime, subject_id: str) -> list[Any]:
    with runtime.db.transaction(write=False) as session:
        lineage = identity.lineage(session, subject_id)
        return consent.history(session, runtime.vault.cipher(subject_id, lineage), lineage)


def _pref_ids(runtime: Runtime, subject_id: str) -> dict[str, str]:
    with runtime.db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT key, preference_id FROM preferences WHERE subject_id = :s"), {"s": subject_id}
        ).all()
    return {str(k): str(p) for k, p in rows}


def _copy_value(runtime: Runtime, table: str, column: str, key_column: str, source: str, target: str) -> None:
    """Raw SQL: overwrite one row's ciphertext with another row's."""
    with runtime.db.engine.begin() as conn:
        blob = conn.execute(text(f"SELECT {column} FROM {table} WHERE {key_column} = :k"), {"k": source}).scalar_one()
        updated = conn.execute(
            text(f"UPDATE {table} SET {column} = :blob WHERE {key_column} = :k"), {"blob": blob, "k": target}
        )
        assert updated.rowcount == 1


def _two_subjects_with_preferences(api: TestClient, keys: Keys) -> tuple[str, str]:
    ada = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    bob = post_consent(api, keys, email="bob@example.com", purposes={"personalize": "granted"})["subject_id"]
    for who, colour in ((ADA, "red"), (BOB, "blue")):
        answer = post_preferences(api, keys, who, [pref("colour", colour), pref("size", f"{colour}-size")])
        assert answer.json()["stored"] == 2, answer.text
    return ada, bob


def test_a_preference_ciphertext_copied_to_another_row_of_the_same_subject_fails_to_decrypt(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    ada, _ = _two_subjects_with_preferences(api, keys)
    assert _read_preferences(runtime, ada) == {"colour": "red", "size": "red-size"}
    ids = _pref_ids(runtime, ada)
    _copy_value(runtime, "preferences", "value_ct", "preference_id", ids["colour"], ids["size"])
    with pytest.raises(DecryptionError):
        _read_preferences(runtime, ada)


def test_a_preference_ciphertext_copied_into_another_subjects_row_fails_to_decrypt(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    ada, bob = _two_subjects_with_preferences(api, keys)
    _copy_value(
        runtime,
        "preferences",
        "value_ct",
        "preference_id",
        _pref_ids(runtime, bob)["colour"],
        _pref_ids(runtime, ada)["colour"],
    )
    with pytest.raises(DecryptionError):
        _read_preferences(runtime, ada)
    assert _read_preferences(runtime, bob) == {"colour": "blue", "size": "blue-size"}


def test_a_ciphertext_moved_with_its_row_to_another_subject_fails_to_decrypt_even_with_the_key(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """After a merge the survivor holds the loser's key; a loser's row re-pointed at the survivor
    without re-encryption must still fail: the subject id is part of the associated data."""
    survivor = post_consent(api, keys, identifiers={"anonymous_id": "a1"})["subject_id"]
    loser = post_consent(api, keys, identifiers={"email": "x@y.z"})["subject_id"]
    post_consent(api, keys, identifiers={"anonymous_id": "a1", "email": "x@y.z"})
    assert len(_read_history(runtime, survivor)) == 3
    loser_record = next(h.record_id for h in _read_history(runtime, survivor) if h.subject_id == loser)
    with runtime.db.transaction(write=False) as session:
        cipher = runtime.vault.cipher(survivor, identity.lineage(session, survivor))
        blob = session.execute(
            text("SELECT evidence_ct FROM consent_records WHERE record_id = :r"), {"r": loser_record}
        ).scalar_one()
    assert cipher.as_subject(loser).decrypt("consent_records", "evidence", loser_record, bytes(blob))
    with pytest.raises(DecryptionError):
        cipher.decrypt("consent_records", "evidence", loser_record, bytes(blob))


def test_evidence_copied_between_ledger_records_fails_to_decrypt(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    receipt = post_consent(api, keys, purposes={"personalize": "granted", "marketing": "denied"})
    first, second = (r["record_id"] for r in receipt["records"])
    assert all(h.evidence is not None for h in _read_history(runtime, receipt["subject_id"]))
    _copy_value(runtime, "consent_records", "evidence_ct", "record_id", first, second)
    with pytest.raises(DecryptionError):
        _read_history(runtime, receipt["subject_id"])


def test_an_identifier_ciphertext_copied_to_another_identifier_row_fails_to_decrypt(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = post_consent(api, keys, identifiers={"email": "ada@example.com", "user_id": "U-1"})["subject_id"]
    with runtime.db.transaction(write=False) as session:
        rows = {r.kind: bytes(r.blind_index) for r in session.scalars(select(Identifier))}
    with runtime.db.engine.begin() as conn:
        blob = conn.execute(
            text("SELECT value_ct FROM identifiers WHERE blind_index = :ix").bindparams(bindparam("ix", rows["email"]))
        ).scalar_one()
        conn.execute(
            text("UPDATE identifiers SET value_ct = :blob WHERE blind_index = :ix"),
            {"blob": blob, "ix": rows["user_id"]},
        )
    cipher = runtime.vault.cipher(subject)
    with runtime.db.transaction(write=False) as session:
        stored = {r.kind: bytes(r.value_ct) for r in session.scalars(select(Identifier))}
    assert cipher.decrypt("identifiers", "value", rows["email"].hex(), stored["email"]) == b"ada@example.com"
    with pytest.raises(DecryptionError):
        cipher.decrypt("identifiers", "value", rows["user_id"].hex(), stored["user_id"])


def test_a_tampered_ciphertext_fails_to_decrypt(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    ada, _ = _two_subjects_with_preferences(api, keys)
    preference_id = _pref_ids(runtime, ada)["colour"]
    with runtime.db.engine.begin() as conn:
        blob = bytearray(
            conn.execute(
                text("SELECT value_ct FROM preferences WHERE preference_id = :p"), {"p": preference_id}
            ).scalar_one()
        )
        blob[-1] ^= 0x01
        conn.execute(
            text("UPDATE preferences SET value_ct = :b WHERE preference_id = :p"),
            {"b": bytes(blob), "p": preference_id},
        )
    with pytest.raises(DecryptionError):
        _read_preferences(runtime, ada)


def test_a_truncated_ciphertext_of_any_length_fails_as_a_decryption_error(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Whatever was cut off, a reader gets DecryptionError (not a ValueError from deep inside)."""
    ada, _ = _two_subjects_with_preferences(api, keys)
    cipher = runtime.vault.cipher(ada)
    blob = cipher.encrypt("preferences", "value", "pref_1", b'"red"')
    failures = {}
    for length in range(len(blob)):
        try:
            cipher.decrypt("preferences", "value", "pref_1", blob[:length])
        except DecryptionError:
            continue
        except Exception as exc:  # which error escapes is the point of this test
            failures[length] = type(exc).__name__
        else:
            failures[length] = "decrypted"
    assert failures == {}, f"lengths that did not raise DecryptionError: {failures}"

    preference_id = _pref_ids(runtime, ada)["colour"]
    with runtime.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE preferences SET value_ct = :b WHERE preference_id = :p"),
            {"b": blob[:20], "p": preference_id},
        )
    with pytest.raises(DecryptionError):
        _read_preferences(runtime, ada)


def _cipher_of_a_new_subject(runtime: Runtime) -> SubjectCipher:
    with runtime.db.transaction() as session:
        subject = identity.resolve(session, runtime.vault, runtime.settings, ADA, client_id=None)
    assert subject is not None
    return runtime.vault.cipher(subject.subject_id)


def test_the_associated_data_names_table_column_subject_and_row(runtime: Runtime) -> None:
    cipher = _cipher_of_a_new_subject(runtime)
    blob = cipher.encrypt("preferences", "value", "pref_1", b'"red"')
    assert cipher.decrypt("preferences", "value", "pref_1", blob) == b'"red"'
    for table, column, row, bound in [
        ("preferences", "value", "pref_2", cipher),
        ("preferences", "other", "pref_1", cipher),
        ("events", "value", "pref_1", cipher),
        ("preferences", "value", "pref_1", cipher.as_subject("sub_someone_else")),
    ]:
        with pytest.raises(DecryptionError):
            bound.decrypt(table, column, row, blob)
    assert b"red" not in blob


def test_an_opener_binds_its_table_column_and_subject_as_decrypt_does(runtime: Runtime) -> None:
    cipher = _cipher_of_a_new_subject(runtime)
    blob = cipher.encrypt("signals", "value", "category|00ff", b"shoes")
    open_value = cipher.opener("signals", "value")
    assert open_value("category|00ff", blob) == b"shoes"
    assert open_value("category|00ff", blob) == b"shoes"  # the key found again by the id the blob names
    for opener, row in [
        (open_value, "category|00fe"),
        (cipher.opener("signals", "other"), "category|00ff"),
        (cipher.opener("events", "value"), "category|00ff"),
        (cipher.as_subject("sub_someone_else").opener("signals", "value"), "category|00ff"),
    ]:
        with pytest.raises(DecryptionError):
            opener(row, blob)
    # Under a key already opened: a broken tag, another version, a truncated blob.
    for damaged in (blob[:-1] + bytes([blob[-1] ^ 1]), b"\x02" + blob[1:], blob[:40]):
        with pytest.raises(DecryptionError):
            open_value("category|00ff", damaged)


def test_the_blind_index_is_deterministic_per_kind_and_value_and_differs_across_kinds(runtime: Runtime) -> None:
    vault = runtime.vault
    first = vault.blind_index("email", "ada@example.com")
    assert len(first) == 32
    assert vault.blind_index("email", "ada@example.com") == first
    assert vault.blind_index("email", "ada@example.org") != first
    assert vault.blind_index("user_id", "ada@example.com") != first
    assert vault.blind_index("loyalty_id", "12345") != vault.blind_index("user_id", "12345")
    assert b"ada" not in first


def test_the_blind_index_is_keyed_by_the_key_store_not_a_plain_hash(runtime: Runtime, tmp_path: Path) -> None:
    index = runtime.vault.blind_index("email", "ada@example.com")
    assert index != hashlib.sha256(b"email\x00ada@example.com").digest()
    assert index != hmac.new(b"", b"email\x00ada@example.com", hashlib.sha256).digest()
    other = Runtime.from_settings(
        Settings(
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path}/other.db",
            keystore_url=f"sqlite:///{tmp_path}/other-keys.db",
            master_key=SecretStr(encode_master_key(generate_master_key())),
        )
    )
    try:
        other.migrate()
        assert other.vault.blind_index("email", "ada@example.com") != index
    finally:
        other.close()


def test_shredding_a_subjects_keys_makes_its_ciphertexts_undecryptable(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    ada, bob = _two_subjects_with_preferences(api, keys)
    assert runtime.vault.shred([ada]) == 1
    with pytest.raises(DecryptionError):
        runtime.vault.cipher(ada)
    with pytest.raises(DecryptionError):
        _read_preferences(runtime, ada)
    # Everyone else is untouched.
    assert _read_preferences(runtime, bob) == {"colour": "blue", "size": "blue-size"}
    assert all(h["evidence"] is not None for h in consents_of(api, keys, bob)["history"])
    assert runtime.vault.shred([ada]) == 0


def test_shredding_a_merged_lineage_leaves_nothing_readable(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    survivor = post_consent(api, keys, identifiers={"anonymous_id": "a1"})["subject_id"]
    loser = post_consent(api, keys, identifiers={"email": "x@y.z"})["subject_id"]
    post_consent(api, keys, identifiers={"anonymous_id": "a1", "email": "x@y.z"})
    with runtime.db.transaction(write=False) as session:
        lineage = identity.lineage(session, survivor)
    assert set(lineage) == {survivor, loser}
    with runtime.db.transaction(write=False) as session:
        blobs = session.execute(
            text("SELECT subject_id, record_id, evidence_ct FROM consent_records WHERE subject_id = :s"),
            {"s": loser},
        ).all()
    held = runtime.vault.cipher(survivor, lineage)
    assert held.as_subject(loser).decrypt("consent_records", "evidence", blobs[0][1], bytes(blobs[0][2]))

    assert runtime.vault.shred(lineage) == 2
    for subject in lineage:
        with pytest.raises(DecryptionError):
            runtime.vault.cipher(subject)
    # The ledger keeps its (now unreadable) ciphertexts: three records, one per consent post.
    with runtime.db.transaction(write=False) as session:
        remaining = session.execute(text("SELECT COUNT(*) FROM consent_records WHERE evidence_ct IS NOT NULL"))
        assert remaining.scalar_one() == 3
