"""No plaintext personal value (email, phone, user agent, full IP, preference value) reaches the
data database, its WAL, the key store or the logs: only blind indexes and ciphertexts."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine, make_url

from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body
from tests.identity.support import post_consent, post_preferences, pref, resolved_id

EMAIL_GIVEN = "Plain.Text@Example.org"
PHONE_GIVEN = "+49 151 12345678"
USER_AGENT = "Mozilla/5.0 SecretAgent"
IP = "198.51.100.23"
PREFERENCE = "ultramarine-shoes"
GHOST_EMAIL = "ghost.user@example.org"
GHOST_PREFERENCE = "ghostly-velvet-hat"

NEEDLES = [
    EMAIL_GIVEN,
    "plain.text@example.org",
    "plain.text",
    PHONE_GIVEN,
    "+4915112345678",
    "4915112345678",
    "151 12345678",
    USER_AGENT,
    "SecretAgent",
    IP,
    PREFERENCE,
    "ultramarine",
    GHOST_EMAIL,
    GHOST_PREFERENCE,
]


def _exercise(api: TestClient, keys: Keys) -> str:
    """Every write path that handles the personal values above."""
    identifiers = {"email": EMAIL_GIVEN, "phone": PHONE_GIVEN}
    evidence = {"user_agent": USER_AGENT, "ip": IP, "locale": "de-DE"}
    collector = keys.header("collector")
    first = post_consent(
        api, keys, identifiers={"anonymous_id": "cookie-77"}, purposes={"analytics": "granted"}, evidence=evidence
    )
    subject = post_consent(
        api,
        keys,
        identifiers=identifiers,
        purposes={"personalize": "granted", "marketing": "granted"},
        evidence=evidence,
    )["subject_id"]
    post_consent(
        api,
        keys,
        identifiers=identifiers,
        purposes={"analytics": "granted"},
        evidence=evidence,
        collected_at="2026-01-16T10:00:00Z",
    )
    # A merge: the anonymous visitor signs up (identifier values are re-encrypted).
    merged = post_consent(
        api,
        keys,
        identifiers={"anonymous_id": "cookie-77", "email": EMAIL_GIVEN},
        collected_at="2026-01-17T10:00:00Z",
        evidence=evidence,
    )
    assert merged["subject_id"] == first["subject_id"]
    # Preferences: stored, superseded, and dropped for an unknown person.
    for value, at in ((PREFERENCE, "2026-02-01T09:00:00Z"), (f"{PREFERENCE}-v2", "2026-02-02T09:00:00Z")):
        answer = post_preferences(
            api, keys, identifiers, [pref("shoes", value), pref("tags", [PREFERENCE, "x"])], declared_at=at
        )
        assert answer.json()["stored"] == 2, answer.text
    ghost = post_preferences(api, keys, {"email": GHOST_EMAIL}, [pref("hat", GHOST_PREFERENCE)])
    assert ghost.json()["subject_id"] is None
    # Refused input and look-ups.
    bad = api.post(
        "/v1/consents",
        headers=collector,
        json=consent_body(identifiers={"email": GHOST_EMAIL, "phone": "0151 999"}, evidence=evidence),
    )
    assert bad.status_code == 422
    assert resolved_id(api, keys, {"phone": "+4915112345678"}) == merged["subject_id"]
    assert (
        api.post(
            "/v1/subjects/resolve", headers=keys.header("privacy"), json={"identifiers": {"email": GHOST_EMAIL}}
        ).status_code
        == 404
    )
    # A withdrawal and a read of the history (which decrypts evidence).
    post_consent(
        api,
        keys,
        identifiers={"phone": PHONE_GIVEN},
        purposes={"marketing": "withdrawn"},
        collected_at="2026-01-18T10:00:00Z",
        evidence=evidence,
    )
    history = api.get(f"/v1/subjects/{subject}/consents", headers=keys.header("privacy")).json()["history"]
    assert {h["evidence"]["user_agent"] for h in history} == {USER_AGENT}  # the values really went in
    return str(merged["subject_id"])


def _found(haystack: bytes) -> list[str]:
    lowered = haystack.lower()
    return [n for n in NEEDLES if n.encode() in haystack or n.lower().encode() in lowered]


def _dump(engine: Engine) -> bytes:
    """Every value of every column of every table, as bytes."""
    parts: list[bytes] = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview | bytearray):
                        parts.append(bytes(value))
                    elif isinstance(value, dict | list):
                        parts.append(json.dumps(value).encode())
                    else:
                        parts.append(str(value).encode())
    return b"\x00".join(parts)


def _sqlite_files(url: str) -> list[Path]:
    database = make_url(url).database
    assert database
    main = Path(database)
    return [p for p in main.parent.iterdir() if p.name.startswith(main.name)]


def test_no_personal_value_is_stored_in_clear_in_any_table(
    api: TestClient, keys: Keys, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _exercise(api, keys)
    data, keystore = _dump(runtime.db.engine), _dump(runtime.keystore.engine)
    assert len(data) > 1000 and keystore
    assert _found(data) == []
    assert _found(keystore) == []
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records).encode()
    assert _found(logged) == []


def test_no_personal_value_is_in_the_sqlite_files_or_their_write_ahead_logs(
    api: TestClient, keys: Keys, runtime: Runtime, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("file scan of the embedded databases; PostgreSQL is covered by the table dump")
    _exercise(api, keys)
    files = _sqlite_files(runtime.settings.resolved_database_url) + _sqlite_files(
        runtime.settings.resolved_keystore_url
    )
    names = {p.name for p in files}
    assert {"profilestore.db", "profilestore.db-wal", "keystore.db"} <= names, names
    wal = Path(make_url(runtime.settings.resolved_database_url).database or "").with_name("profilestore.db-wal")
    assert wal.stat().st_size > 0
    for path in files:
        assert _found(path.read_bytes()) == [], path
    # Once checkpointed into the main file, still nothing.
    checkpoint = sqlite3.connect(make_url(runtime.settings.resolved_database_url).database or "")
    try:
        checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        checkpoint.close()
    for path in files:
        if path.exists():
            assert _found(path.read_bytes()) == [], path


def test_the_scan_would_see_a_plaintext_value(runtime: Runtime, backend: str) -> None:
    """The scanner's own control: a value written in clear is found, in a table and in the files."""
    with runtime.db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subjects (id, status, merged_into, created_at, updated_at) "
                "VALUES (:id, 'active', NULL, :t, :t)"
            ),
            {"id": "ULTRAMARINE-shoes", "t": "2026-01-01 00:00:00"},
        )
    assert _found(_dump(runtime.db.engine)) == ["ultramarine-shoes", "ultramarine"]
    if backend == "sqlite":
        blobs = b"".join(p.read_bytes() for p in _sqlite_files(runtime.settings.resolved_database_url))
        assert "ultramarine" in _found(blobs)
