"""Subjects are found by normalised identifiers, created on first consent and reused after;
`POST /v1/subjects/resolve` looks them up without creating or merging anything."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from profilestore.config import Settings
from profilestore.identity import service as identity
from profilestore.identity.models import Identifier, Subject
from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body, row_counts
from tests.identity.support import keystore_rows, post_consent, resolve, resolved_id


def _identity_counts(runtime: Runtime) -> tuple[int, int, int, int]:
    counts = row_counts(runtime)
    return counts["subjects"], counts["identifiers"], counts["subject_merges"], len(keystore_rows(runtime))


def test_differently_written_emails_resolve_to_the_same_subject(api: TestClient, keys: Keys) -> None:
    receipt = post_consent(api, keys, email=" Ada@Example.COM ")
    assert resolved_id(api, keys, {"email": "ada@example.com"}) == receipt["subject_id"]
    assert resolved_id(api, keys, {"email": "ADA@EXAMPLE.COM"}) == receipt["subject_id"]

    again = post_consent(api, keys, email="ada@example.com")
    assert again["subject_id"] == receipt["subject_id"]


def test_the_first_consent_creates_a_subject_and_later_ones_reuse_it(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    assert _identity_counts(runtime) == (0, 0, 0, 0)
    first = post_consent(api, keys, email="grace@example.com")
    assert first["subject_id"].startswith("sub_")
    assert _identity_counts(runtime) == (1, 1, 0, 1)

    second = post_consent(api, keys, email="grace@example.com", collected_at="2026-01-16T10:00:00Z")
    assert second["subject_id"] == first["subject_id"]
    assert _identity_counts(runtime) == (1, 1, 0, 1)

    other = post_consent(api, keys, email="linus@example.com")
    assert other["subject_id"] != first["subject_id"]
    assert _identity_counts(runtime) == (2, 2, 0, 2)


def test_a_new_identifier_seen_with_a_known_one_is_attached_to_its_subject(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    first = post_consent(api, keys, email="grace@example.com")
    both = post_consent(api, keys, identifiers={"email": "grace@example.com", "user_id": "U-77"})
    assert both["subject_id"] == first["subject_id"]
    assert _identity_counts(runtime) == (1, 2, 0, 1)
    assert resolved_id(api, keys, {"user_id": "U-77"}) == first["subject_id"]
    assert resolve(api, keys, {"user_id": "u-77"}).status_code == 404  # case is kept for opaque ids


def test_identifiers_are_stored_as_blind_index_of_the_normalised_value(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    receipt = post_consent(api, keys, identifiers={"email": " Ada@Example.COM ", "phone": "+49 151 12345678"})
    with runtime.db.transaction(write=False) as session:
        rows = {row.kind: row for row in session.scalars(select(Identifier))}
    assert set(rows) == {"email", "phone"}
    assert bytes(rows["email"].blind_index) == runtime.vault.blind_index("email", "ada@example.com")
    assert bytes(rows["phone"].blind_index) == runtime.vault.blind_index("phone", "+4915112345678")
    assert {row.subject_id for row in rows.values()} == {receipt["subject_id"]}
    cipher = runtime.vault.cipher(receipt["subject_id"])
    email_ix = bytes(rows["email"].blind_index).hex()
    assert cipher.decrypt("identifiers", "value", email_ix, rows["email"].value_ct) == b"ada@example.com"


def test_resolve_creates_nothing_a_404_for_strangers_and_no_new_identifier_for_a_found_subject(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    receipt = post_consent(api, keys, email="grace@example.com")
    before = _identity_counts(runtime)
    answer = resolve(api, keys, {"email": "nobody@example.com"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert "nobody@example.com" not in answer.text
    assert _identity_counts(runtime) == before

    assert resolved_id(api, keys, {"email": "grace@example.com", "phone": "+4915112345678"}) == receipt["subject_id"]
    assert _identity_counts(runtime) == before
    assert resolve(api, keys, {"phone": "+4915112345678"}).status_code == 404

    with runtime.db.transaction() as session:
        found = identity.resolve(
            session, runtime.vault, runtime.settings, {"email": "x@example.com"}, client_id=None, create=False
        )
    assert found is None
    assert _identity_counts(runtime) == before


def test_resolve_of_identifiers_of_two_subjects_is_a_conflict_and_merges_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    a = post_consent(api, keys, email="grace@example.com")
    b = post_consent(api, keys, identifiers={"email": "linus@example.com", "user_id": "L-1"})
    before = _identity_counts(runtime)
    answer = resolve(api, keys, {"email": "grace@example.com", "user_id": "L-1"})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "conflict"
    assert "grace@example.com" not in answer.text
    assert _identity_counts(runtime) == before
    assert before[2] == 0
    assert resolved_id(api, keys, {"email": "grace@example.com"}) == a["subject_id"]
    assert resolved_id(api, keys, {"user_id": "L-1"}) == b["subject_id"]


def test_resolve_is_for_privacy_and_admin_clients_only(api: TestClient, keys: Keys) -> None:
    receipt = post_consent(api, keys, email="grace@example.com")
    assert resolved_id(api, keys, {"email": "grace@example.com"}) == receipt["subject_id"]
    admin = resolve(api, keys, {"email": "grace@example.com"}, role="admin")
    assert admin.status_code == 200
    assert admin.json() == {"subject_id": receipt["subject_id"]}
    for role in ("collector", "reader"):
        assert resolve(api, keys, {"email": "grace@example.com"}, role=role).status_code == 403
    assert api.post("/v1/subjects/resolve", json={"identifiers": {"email": "grace@example.com"}}).status_code == 401


def test_resolve_refuses_malformed_unknown_or_missing_identifiers_by_name_without_echoing_them(
    api: TestClient, keys: Keys
) -> None:
    answer = resolve(api, keys, {"email": "grace-at-example.com"})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "identifiers.email"
    assert "grace-at-example.com" not in answer.text
    unknown = resolve(api, keys, {"fax": "+4930123456"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["field"] == "identifiers.fax"
    assert "+4930123456" not in unknown.text
    empty = resolve(api, keys, {})
    assert empty.status_code == 422
    assert empty.json()["error"]["field"].startswith("identifiers")


def test_a_malformed_identifier_in_a_consent_post_is_refused_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    before = row_counts(runtime)
    keys_before = keystore_rows(runtime)
    for identifiers, field in [
        ({"email": "ada@example.com", "phone": "0151 12345678"}, "identifiers.phone"),
        ({"email": "ada@example.com", "user_id": "has space"}, "identifiers.user_id"),
        ({"anonymous_id": "   "}, "identifiers.anonymous_id"),
    ]:
        answer = api.post("/v1/consents", headers=keys.header("collector"), json=consent_body(identifiers=identifiers))
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["field"] == field
        for value in identifiers.values():
            if value.strip():
                assert value.strip() not in answer.text
    assert row_counts(runtime) == before
    assert keystore_rows(runtime) == keys_before


def test_phone_without_country_code_resolves_through_the_default_region(runtime: Runtime, settings: Settings) -> None:
    german = settings.model_copy(update={"default_phone_region": "DE"})
    with runtime.db.transaction() as session:
        created = identity.resolve(session, runtime.vault, german, {"phone": "+49 151 12345678"}, client_id=None)
    assert created is not None and created.created
    with runtime.db.transaction() as session:
        local = identity.resolve(session, runtime.vault, german, {"phone": "0151 1234 5678"}, client_id=None)
        assert local is not None and not local.created
        assert local.subject_id == created.subject_id
        assert session.scalar(select(func.count()).select_from(Subject)) == 1
    with runtime.db.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM identifiers")).scalar_one() == 1


def test_two_transactions_seeing_a_new_identifier_at_once_end_up_on_one_subject(runtime: Runtime) -> None:
    """The first transaction holds its new identifier uncommitted while the second resolves the same
    one (on PostgreSQL the second's insert waits; on SQLite its BEGIN waits)."""
    email = {"email": "race@example.com"}
    first = runtime.db.write_session()
    result: dict[str, Any] = {}
    try:
        won = identity.resolve(first, runtime.vault, runtime.settings, email, client_id=None)
        assert won is not None

        def second() -> None:
            with runtime.db.transaction() as session:
                found = identity.resolve(session, runtime.vault, runtime.settings, email, client_id=None)
                result["subject_id"] = found.subject_id if found else None

        racer = threading.Thread(target=second)
        racer.start()
        time.sleep(0.3)  # let the second transaction reach the first one's lock
        first.commit()
        racer.join(timeout=30)
        assert not racer.is_alive()
    finally:
        first.close()
    assert result["subject_id"] == won.subject_id
    with runtime.db.engine.connect() as conn:
        owners = conn.execute(text("SELECT subject_id FROM identifiers")).scalars().all()
        live = conn.execute(text("SELECT id FROM subjects WHERE status = 'active'")).scalars().all()
    assert owners == [won.subject_id]
    assert live == [won.subject_id], "a subject was left behind with no identifier"
