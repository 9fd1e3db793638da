"""Declared preferences: stored only under a purpose in force whose policy covers their category,
versioned by declared_at, refused precisely (and without writes) when malformed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from profilestore.identity import service as identity
from profilestore.preferences import service as preferences
from profilestore.preferences.models import Preference
from profilestore.runtime import Runtime
from tests.conftest import CONSENT_VALID_DAYS, Keys, row_counts
from tests.identity.support import keystore_rows, post_consent, post_preferences, pref, resolve, resolved_id

ADA = {"email": "ada@example.com"}


def _current(runtime: Runtime, subject_id: str) -> dict[str, Any]:
    with runtime.db.transaction(write=False) as session:
        cipher = runtime.vault.cipher(subject_id, identity.lineage(session, subject_id))
        return {p.key: p.value for p in preferences.current(session, cipher)}


def _rows(runtime: Runtime) -> list[Preference]:
    with runtime.db.transaction(write=False) as session:
        return list(session.scalars(select(Preference).order_by(Preference.declared_at)))


def _stored(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_preferences_under_a_granted_purpose_are_stored_and_read_back(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    values: list[tuple[str, Any]] = [
        ("favourite_colour", "ultramarine"),
        ("shoe_size", 42),
        ("budget", 99.5),
        ("newsletter", False),
        ("brands", ["acme", "globex"]),
    ]
    body = _stored(post_preferences(api, keys, ADA, [pref(k, v) for k, v in values], source="onboarding"))
    assert body == {"subject_id": subject, "stored": 5, "dropped": 0, "dropped_keys": []}
    assert _current(runtime, subject) == dict(values)
    rows = _rows(runtime)
    assert {(r.subject_id, r.source, r.category) for r in rows} == {
        (subject, "onboarding", "user.preferences.interests")
    }
    with runtime.db.engine.connect() as conn:
        collector = conn.execute(text("SELECT id FROM clients WHERE role = 'collector'")).scalar_one()
    assert {r.client_id for r in rows} == {collector}


def test_without_any_consent_everything_is_dropped_and_no_subject_is_created(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    before, keys_before = row_counts(runtime), keystore_rows(runtime)
    body = _stored(post_preferences(api, keys, {"email": "stranger@example.com"}, [pref("a", 1), pref("b", 2)]))
    assert body == {"subject_id": None, "stored": 0, "dropped": 2, "dropped_keys": ["a", "b"]}
    assert row_counts(runtime) == before
    assert keystore_rows(runtime) == keys_before


def test_a_subject_who_only_denied_gets_nothing_stored(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "denied", "marketing": "denied"})["subject_id"]
    body = _stored(post_preferences(api, keys, ADA, [pref("colour", "red")]))
    assert body == {"subject_id": subject, "stored": 0, "dropped": 1, "dropped_keys": ["colour"]}
    assert _rows(runtime) == []


def test_only_categories_some_purpose_in_force_may_use_are_stored(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = post_consent(api, keys, purposes={"analytics": "granted"})["subject_id"]  # policy: user.behavior
    body = _stored(
        post_preferences(
            api,
            keys,
            ADA,
            [
                pref("colour", "red", "user.preferences.interests"),
                pref("last_visit", "2026-01-01", "user.behavior.browsing_history"),
                pref("channel", "email", "user.preferences.channel"),
                pref("email_copy", "x", "user.contact.email"),
            ],
        )
    )
    assert body == {
        "subject_id": subject,
        "stored": 1,
        "dropped": 3,
        "dropped_keys": ["colour", "channel", "email_copy"],
    }
    assert _current(runtime, subject) == {"last_visit": "2026-01-01"}


def test_consent_to_a_parent_purpose_lets_its_policy_collect(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = post_consent(api, keys, purposes={"marketing.communications.email": "granted"})["subject_id"]
    body = _stored(post_preferences(api, keys, ADA, [pref("frequency", "weekly", "user.preferences.frequency")]))
    assert body["stored"] == 1
    assert _current(runtime, subject) == {"frequency": "weekly"}


def test_after_withdrawal_of_the_only_grant_new_preferences_are_dropped(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    assert _stored(post_preferences(api, keys, ADA, [pref("colour", "red")]))["stored"] == 1
    post_consent(api, keys, purposes={"personalize": "withdrawn"}, collected_at="2026-01-20T10:00:00Z")
    body = _stored(post_preferences(api, keys, ADA, [pref("colour", "blue"), pref("size", "M")]))
    assert body == {"subject_id": subject, "stored": 0, "dropped": 2, "dropped_keys": ["colour", "size"]}
    assert len(_rows(runtime)) == 1


def test_a_post_of_which_nothing_is_kept_links_no_identifier_and_merges_nobody(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    denied = post_consent(api, keys, purposes={"personalize": "denied"})["subject_id"]
    other = post_consent(api, keys, email=None, identifiers={"anonymous_id": "anon-7"})["subject_id"]
    before, keys_before = row_counts(runtime), keystore_rows(runtime)
    # Ada's email (she denied) beside a new user id, and beside another person's cookie: linking
    # either would write, and neither post keeps a preference.
    for identifiers in ({**ADA, "user_id": "u-ada"}, {**ADA, "anonymous_id": "anon-7"}):
        body = _stored(post_preferences(api, keys, identifiers, [pref("colour", "red")]))
        assert body == {"subject_id": denied, "stored": 0, "dropped": 1, "dropped_keys": ["colour"]}
    assert row_counts(runtime) == before
    assert keystore_rows(runtime) == keys_before
    assert resolve(api, keys, {"user_id": "u-ada"}).status_code == 404
    assert resolved_id(api, keys, {"anonymous_id": "anon-7"}) == other


def test_a_post_that_keeps_a_preference_links_its_new_identifiers(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    body = _stored(post_preferences(api, keys, {**ADA, "user_id": "u-ada"}, [pref("colour", "red")]))
    assert (body["subject_id"], body["stored"]) == (subject, 1)
    assert resolved_id(api, keys, {"user_id": "u-ada"}) == subject


def test_a_restricted_subject_gets_nothing_stored_or_linked(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    with runtime.db.transaction() as session:
        session.execute(text("UPDATE subjects SET status = 'restricted' WHERE id = :id"), {"id": subject})
    before = row_counts(runtime)
    body = _stored(post_preferences(api, keys, {**ADA, "user_id": "u-ada"}, [pref("colour", "red")]))
    assert body == {"subject_id": subject, "stored": 0, "dropped": 1, "dropped_keys": ["colour"]}
    assert row_counts(runtime) == before


def test_a_post_that_merges_in_a_restricted_person_keeps_nothing(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    other = post_consent(api, keys, identifiers={"anonymous_id": "anon-7"}, purposes={"personalize": "granted"})
    with runtime.db.transaction() as session:
        session.execute(text("UPDATE subjects SET status = 'restricted' WHERE id = :id"), {"id": other["subject_id"]})
    body = _stored(post_preferences(api, keys, {**ADA, "anonymous_id": "anon-7"}, [pref("colour", "red")]))
    assert body == {"subject_id": subject, "stored": 0, "dropped": 1, "dropped_keys": ["colour"]}
    assert _rows(runtime) == []


def test_an_expired_grant_does_not_allow_collection(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    # Collected a month longer ago than grants stay in force.
    collected = datetime.now(UTC) - timedelta(days=CONSENT_VALID_DAYS + 30)
    post_consent(api, keys, purposes={"personalize": "granted"}, collected_at=collected.isoformat())
    body = _stored(post_preferences(api, keys, ADA, [pref("colour", "red")]))
    assert (body["stored"], body["dropped_keys"]) == (0, ["colour"])
    assert _rows(runtime) == []


def test_a_purpose_resting_on_contract_collects_without_consent(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "denied"})["subject_id"]
    answer = api.put(
        "/v1/purposes/functional",
        headers=keys.header("admin"),
        json={"name": "Functional", "legal_basis": "contract", "categories": ["user.preferences.channel"]},
    )
    assert answer.status_code == 200, answer.text
    body = _stored(
        post_preferences(
            api,
            keys,
            ADA,
            [pref("channel", "sms", "user.preferences.channel"), pref("colour", "red", "user.preferences.interests")],
        )
    )
    assert (body["stored"], body["dropped_keys"]) == (1, ["colour"])
    assert _current(runtime, subject) == {"channel": "sms"}


def test_a_later_declaration_becomes_current_and_the_earlier_one_stays_in_history(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    _stored(post_preferences(api, keys, ADA, [pref("colour", "red")], declared_at="2026-02-01T09:00:00Z"))
    _stored(post_preferences(api, keys, ADA, [pref("colour", "blue")], declared_at="2026-03-01T09:00:00Z"))
    assert _current(runtime, subject) == {"colour": "blue"}
    rows = _rows(runtime)
    assert [(r.declared_at.month, r.superseded_at) for r in rows] == [(2, rows[1].declared_at), (3, None)]


def test_a_late_arriving_older_declaration_does_not_replace_the_current_one(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    _stored(post_preferences(api, keys, ADA, [pref("colour", "blue")], declared_at="2026-03-01T09:00:00Z"))
    late = _stored(post_preferences(api, keys, ADA, [pref("colour", "red")], declared_at="2026-02-01T09:00:00Z"))
    assert late["stored"] == 1
    assert _current(runtime, subject) == {"colour": "blue"}
    rows = _rows(runtime)
    assert len(rows) == 2
    assert [r.superseded_at is None for r in rows] == [False, True]  # ordered by declared_at
    newer = _stored(post_preferences(api, keys, ADA, [pref("colour", "green")], declared_at="2026-04-01T09:00:00Z"))
    assert newer["stored"] == 1
    assert _current(runtime, subject) == {"colour": "green"}
    assert sum(r.superseded_at is None for r in _rows(runtime)) == 1


def test_declarations_of_one_key_are_kept_per_subject(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    ada = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    bob = post_consent(api, keys, email="bob@example.com", purposes={"personalize": "granted"})["subject_id"]
    _stored(post_preferences(api, keys, ADA, [pref("colour", "red")]))
    _stored(post_preferences(api, keys, {"email": "bob@example.com"}, [pref("colour", "blue")]))
    assert _current(runtime, ada) == {"colour": "red"}
    assert _current(runtime, bob) == {"colour": "blue"}


BAD_INPUT: list[tuple[str, list[dict[str, Any]], str, str]] = [
    (
        "unknown category",
        [pref("colour", "red", "user.preferences.nope")],
        "2026-02-01T09:00:00Z",
        "preferences.0.category",
    ),
    (
        "unknown category in second item",
        [pref("colour", "red"), pref("size", "M", "not.a.category")],
        "2026-02-01T09:00:00Z",
        "preferences.1.category",
    ),
    (
        "duplicate key",
        [pref("colour", "red"), pref("size", "M"), pref("colour", "blue")],
        "2026-02-01T09:00:00Z",
        "preferences.2.key",
    ),
    ("future declared_at", [pref("colour", "red")], "2099-01-01T00:00:00Z", "declared_at"),
    ("naive declared_at", [pref("colour", "red")], "2026-02-01T09:00:00", "declared_at"),
    ("upper-case key", [pref("Colour", "red")], "2026-02-01T09:00:00Z", "preferences.0.key"),
    ("key with a space", [pref("favourite colour", "red")], "2026-02-01T09:00:00Z", "preferences.0.key"),
    ("key starting with a digit", [pref("1st", "red")], "2026-02-01T09:00:00Z", "preferences.0.key"),
    ("key too long", [pref("k" * 101, "red")], "2026-02-01T09:00:00Z", "preferences.0.key"),
    (
        "object value",
        [{"key": "colour", "value": {"nested": "no"}, "category": "user.preferences"}],
        "2026-02-01T09:00:00Z",
        "preferences.0.value",
    ),
    ("missing category", [{"key": "colour", "value": "red"}], "2026-02-01T09:00:00Z", "preferences.0.category"),
    ("no preferences", [], "2026-02-01T09:00:00Z", "preferences"),
]


def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    post_consent(api, keys, purposes={"personalize": "granted"})
    before, keys_before = row_counts(runtime), keystore_rows(runtime)
    for case, items, declared_at, field in BAD_INPUT:
        # A new identifier rides along: a refused request must not attach it either.
        answer = post_preferences(api, keys, {**ADA, "user_id": "new-user"}, items, declared_at=declared_at)
        assert answer.status_code == 422, (case, answer.text)
        error = answer.json()["error"]
        assert error["field"] is not None and error["field"].startswith(field), (case, error)
        assert "ada@example.com" not in answer.text, case
        assert row_counts(runtime) == before, case
        assert keystore_rows(runtime) == keys_before, case


def test_a_slightly_future_declared_at_within_the_clock_skew_is_accepted(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    post_consent(api, keys, purposes={"personalize": "granted"})
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    assert _stored(post_preferences(api, keys, ADA, [pref("colour", "red")], declared_at=soon))["stored"] == 1


def test_preferences_are_for_collector_clients_only(api: TestClient, keys: Keys) -> None:
    post_consent(api, keys, purposes={"personalize": "granted"})
    body = {
        "identifiers": ADA,
        "preferences": [pref("colour", "red")],
        "source": "x",
        "declared_at": "2026-02-01T09:00:00Z",
    }
    for role in ("reader", "privacy", "admin"):
        assert api.post("/v1/preferences", headers=keys.header(role), json=body).status_code == 403
    assert api.post("/v1/preferences", json=body).status_code == 401


def test_a_retry_with_the_same_idempotency_key_stores_nothing_twice(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """DESIGN: retries are safe with `Idempotency-Key` on consent and preference posts."""
    subject = post_consent(api, keys, purposes={"personalize": "granted"})["subject_id"]
    retry = {"Idempotency-Key": "prefs-ada-1"}
    first = _stored(post_preferences(api, keys, ADA, [pref("colour", "ultramarine")], headers=retry))
    assert first == {"subject_id": subject, "stored": 1, "dropped": 0, "dropped_keys": []}
    second = post_preferences(api, keys, ADA, [pref("colour", "ultramarine")], headers=retry)
    assert second.status_code == 201
    assert second.json() == first
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert len(_rows(runtime)) == 1
    with runtime.db.engine.connect() as conn:
        remembered = " ".join(str(r) for r in conn.execute(text("SELECT * FROM idempotency_keys")))
    assert "ultramarine" not in remembered and "ada@example.com" not in remembered

    reused = post_preferences(api, keys, ADA, [pref("colour", "crimson")], headers=retry)
    assert reused.status_code == 422
    assert reused.json()["error"]["field"] == "Idempotency-Key"
    assert _current(runtime, subject) == {"colour": "ultramarine"}
