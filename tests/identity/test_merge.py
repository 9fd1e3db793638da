"""Merges: two identifiers seen together on one request belong to one person. The older subject
survives; the younger one's identifiers, consent state and preferences follow it, its ledger
records stay where they are but read as the survivor's history."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from profilestore.crypto.service import SubjectCipher
from profilestore.identity import service as identity
from profilestore.identity.models import Identifier, Subject, SubjectMerge
from profilestore.preferences import service as preferences
from profilestore.preferences.models import Preference
from profilestore.runtime import Runtime
from tests.identity.support import consents_of, keystore_rows, post_consent, post_preferences, pref, resolved_id


def _evidence(agent: str) -> dict[str, str]:
    return {"user_agent": agent, "ip": "203.0.113.77", "locale": "en-GB"}


def _decrypted_evidence(agent: str) -> dict[str, str]:
    return {"user_agent": agent, "ip": "203.0.113.0", "locale": "en-GB"}


def _consent(
    api: TestClient, keys: Any, identifiers: dict[str, str], purposes: dict[str, str], at: str, agent: str
) -> dict[str, Any]:
    return post_consent(
        api, keys, identifiers=identifiers, purposes=purposes, collected_at=at, evidence=_evidence(agent)
    )


def _survivor_cipher(runtime: Runtime, subject_id: str) -> SubjectCipher:
    with runtime.db.transaction(write=False) as session:
        return runtime.vault.cipher(subject_id, identity.lineage(session, subject_id))


def _current_preferences(runtime: Runtime, subject_id: str) -> dict[str, Any]:
    with runtime.db.transaction(write=False) as session:
        cipher = runtime.vault.cipher(subject_id, identity.lineage(session, subject_id))
        return {p.key: p.value for p in preferences.current(session, cipher)}


def _merges(runtime: Runtime) -> dict[str, str]:
    with runtime.db.transaction(write=False) as session:
        return {m.subject_id: m.merged_into for m in session.scalars(select(SubjectMerge))}


def test_a_request_naming_two_subjects_merges_them_into_the_older(api: TestClient, keys: Any, runtime: Runtime) -> None:
    anon = {"anonymous_id": "a1"}
    email = {"email": "x@y.z"}
    a = _consent(api, keys, anon, {"personalize": "granted", "analytics": "granted"}, "2026-01-10T10:00:00Z", "ua-A1")
    b = _consent(
        api,
        keys,
        email,
        {"personalize": "denied", "marketing": "granted", "analytics": "granted"},
        "2026-01-12T10:00:00Z",
        "ua-B",
    )
    _consent(api, keys, anon, {"analytics": "withdrawn"}, "2026-01-14T10:00:00Z", "ua-A2")
    survivor, loser = a["subject_id"], b["subject_id"]
    assert survivor != loser

    merged = _consent(api, keys, {**anon, **email}, {"third_party_sharing": "denied"}, "2026-01-16T10:00:00Z", "ua-M")
    assert merged["subject_id"] == survivor

    # One subject: the younger is a tombstone pointing at the survivor, recorded as a merge.
    with runtime.db.transaction(write=False) as session:
        rows = {s.id: s for s in session.scalars(select(Subject))}
        owners = {i.kind: i.subject_id for i in session.scalars(select(Identifier))}
    assert set(rows) == {survivor, loser}
    assert (rows[survivor].status, rows[survivor].merged_into) == ("active", None)
    assert (rows[loser].status, rows[loser].merged_into) == ("merged", survivor)
    assert _merges(runtime) == {loser: survivor}
    assert owners == {"anonymous_id": survivor, "email": survivor}
    assert resolved_id(api, keys, email) == survivor
    assert resolved_id(api, keys, anon) == survivor

    # Per purpose, the decision collected last wins, whichever subject recorded it.
    body = consents_of(api, keys, survivor)
    assert body["subject_id"] == survivor
    assert {s["purpose"]: s["status"] for s in body["state"]} == {
        "analytics": "withdrawn",  # the survivor's later withdrawal beats the loser's grant
        "marketing": "granted",  # only the loser had it
        "personalize": "denied",  # the loser's later denial beats the survivor's grant
        "third_party_sharing": "denied",
    }
    with runtime.db.engine.connect() as conn:
        state_owners = {row[0] for row in conn.execute(text("SELECT subject_id FROM consent_state"))}
        ledger: dict[str, str] = {
            str(r): str(s) for r, s in conn.execute(text("SELECT record_id, subject_id FROM consent_records"))
        }
    assert state_owners == {survivor}

    # Ledger records never move, yet read as the survivor's history with their evidence.
    loser_records = {r["record_id"] for r in b["records"]}
    assert {rid for rid, owner in ledger.items() if owner == loser} == loser_records
    history = body["history"]
    assert len(history) == 7
    assert [h["seq"] for h in history] == sorted(h["seq"] for h in history)
    for record in history:
        assert record["evidence"] is not None, record
        if record["record_id"] in loser_records:
            assert record["subject_id"] == loser
            assert record["evidence"] == _decrypted_evidence("ua-B")
        else:
            assert record["subject_id"] == survivor
    assert {h["evidence"]["user_agent"] for h in history} == {"ua-A1", "ua-A2", "ua-B", "ua-M"}

    # The old id still answers, for the survivor.
    assert consents_of(api, keys, loser) == consents_of(api, keys, survivor)
    verify = api.get("/v1/ledger/verify", headers=keys.header("privacy"))
    assert verify.json()["ok"] is True


def test_the_older_subject_survives_whatever_the_order_of_identifiers(
    api: TestClient, keys: Any, runtime: Runtime
) -> None:
    older = post_consent(api, keys, identifiers={"email": "old@example.com"})
    younger = post_consent(api, keys, identifiers={"anonymous_id": "cookie-9"})
    merged = post_consent(api, keys, identifiers={"anonymous_id": "cookie-9", "email": "old@example.com"})
    assert merged["subject_id"] == older["subject_id"]
    assert _merges(runtime) == {younger["subject_id"]: older["subject_id"]}
    assert consents_of(api, keys, younger["subject_id"])["subject_id"] == older["subject_id"]


def test_a_merge_keeps_the_data_keys_of_both_subjects_and_creates_none(
    api: TestClient, keys: Any, runtime: Runtime
) -> None:
    a = post_consent(api, keys, identifiers={"anonymous_id": "a1"})
    b = post_consent(api, keys, identifiers={"email": "x@y.z"})
    before = keystore_rows(runtime)
    post_consent(api, keys, identifiers={"anonymous_id": "a1", "email": "x@y.z"})
    after = keystore_rows(runtime)
    assert after == before
    assert {owner for _, owner, _ in after} == {a["subject_id"], b["subject_id"]}


def test_preferences_follow_the_merge_re_encrypted_and_the_later_declaration_stays_current(
    api: TestClient, keys: Any, runtime: Runtime
) -> None:
    anon, email = {"anonymous_id": "a1"}, {"email": "x@y.z"}
    survivor = post_consent(api, keys, identifiers=anon, purposes={"personalize": "granted"})["subject_id"]
    loser = post_consent(api, keys, identifiers=email, purposes={"personalize": "granted"})["subject_id"]
    for identifiers, key, value, at in [
        (anon, "color", "red", "2026-01-10T12:00:00Z"),
        (anon, "size", "M", "2026-01-20T12:00:00Z"),
        (email, "color", "blue", "2026-01-15T12:00:00Z"),
        (email, "size", "L", "2026-01-12T12:00:00Z"),
        (email, "brand", ["acme", "globex"], "2026-01-11T12:00:00Z"),
    ]:
        answer = post_preferences(api, keys, identifiers, [pref(key, value)], declared_at=at)
        assert answer.status_code == 201, answer.text
        assert answer.json()["stored"] == 1
    assert _current_preferences(runtime, loser) == {"color": "blue", "size": "L", "brand": ["acme", "globex"]}

    post_consent(api, keys, identifiers={**anon, **email})

    assert _current_preferences(runtime, survivor) == {"brand": ["acme", "globex"], "color": "blue", "size": "M"}
    survivor_key = _survivor_cipher(runtime, survivor).primary_key_id
    with runtime.db.transaction(write=False) as session:
        rows = session.scalars(select(Preference)).all()
        assert len(rows) == 5
        assert {r.subject_id for r in rows} == {survivor}
        assert {bytes(r.value_ct)[1:17].hex() for r in rows} == {survivor_key}
        current_per_key: dict[str, int] = {}
        for r in rows:
            if r.superseded_at is None:
                current_per_key[r.key] = current_per_key.get(r.key, 0) + 1
        assert current_per_key == {"brand": 1, "color": 1, "size": 1}
        superseded = {(r.key, r.declared_at.isoformat()): r.superseded_at for r in rows if r.superseded_at}
    assert set(superseded) == {("color", "2026-01-10T12:00:00+00:00"), ("size", "2026-01-12T12:00:00+00:00")}


def test_a_preference_post_naming_two_subjects_merges_them_too(api: TestClient, keys: Any, runtime: Runtime) -> None:
    survivor = post_consent(api, keys, identifiers={"anonymous_id": "a1"})["subject_id"]
    loser = post_consent(api, keys, identifiers={"email": "x@y.z"})["subject_id"]
    answer = post_preferences(api, keys, {"anonymous_id": "a1", "email": "x@y.z"}, [pref("color", "teal")])
    assert answer.status_code == 201, answer.text
    assert answer.json()["subject_id"] == survivor
    assert _merges(runtime) == {loser: survivor}
    assert _current_preferences(runtime, survivor) == {"color": "teal"}


def test_a_restriction_survives_a_merge_into_an_unrestricted_subject(
    api: TestClient, keys: Any, runtime: Runtime
) -> None:
    survivor = post_consent(api, keys, identifiers={"anonymous_id": "a1"}, purposes={"personalize": "granted"})
    loser = post_consent(api, keys, identifiers={"email": "x@y.z"}, purposes={"personalize": "granted"})
    with runtime.db.transaction() as session:
        session.execute(text("UPDATE subjects SET status = 'restricted' WHERE id = :id"), {"id": loser["subject_id"]})
    merged = post_consent(api, keys, identifiers={"anonymous_id": "a1", "email": "x@y.z"})
    assert merged["subject_id"] == survivor["subject_id"]
    with runtime.db.transaction(write=False) as session:
        row = session.get(Subject, survivor["subject_id"])
        assert row is not None and row.status == "restricted"
    # and so the merged person's preferences are no longer collected
    answer = post_preferences(api, keys, {"anonymous_id": "a1"}, [pref("color", "teal")])
    assert answer.json()["stored"] == 0, answer.text


def test_a_chain_of_merges_flattens_onto_the_final_survivor(api: TestClient, keys: Any, runtime: Runtime) -> None:
    ids_a, ids_b, ids_c, ids_d = {"anonymous_id": "a"}, {"email": "b@x.io"}, {"user_id": "c"}, {"loyalty_id": "d"}
    a = _consent(api, keys, ids_a, {"personalize": "granted"}, "2026-01-01T10:00:00Z", "ua-a")["subject_id"]
    b = _consent(api, keys, ids_b, {"marketing": "granted"}, "2026-01-02T10:00:00Z", "ua-b")["subject_id"]
    c = _consent(api, keys, ids_c, {"analytics": "granted"}, "2026-01-03T10:00:00Z", "ua-c")["subject_id"]
    d = _consent(api, keys, ids_d, {"personalize": "granted", "analytics": "denied"}, "2026-01-04T10:00:00Z", "ua-d")[
        "subject_id"
    ]
    for identifiers, key in [(ids_a, "from_a"), (ids_d, "from_d")]:
        stored = post_preferences(api, keys, identifiers, [pref(key, key.upper())])
        assert stored.json()["stored"] == 1, stored.text

    assert (
        _consent(api, keys, {**ids_c, **ids_d}, {"marketing": "denied"}, "2026-01-05T10:00:00Z", "ua-cd")["subject_id"]
        == c
    )
    assert _merges(runtime) == {d: c}
    assert (
        _consent(api, keys, {**ids_a, **ids_b}, {"marketing": "granted"}, "2026-01-06T10:00:00Z", "ua-ab")["subject_id"]
        == a
    )
    assert (
        _consent(api, keys, {**ids_a, **ids_c}, {"third_party_sharing": "denied"}, "2026-01-07T10:00:00Z", "ua-ac")[
            "subject_id"
        ]
        == a
    )

    assert _merges(runtime) == {b: a, c: a, d: a}
    with runtime.db.transaction(write=False) as session:
        tombstones = {s.id: s.merged_into for s in session.scalars(select(Subject))}
        assert identity.lineage(session, a) == (a, *sorted([b, c, d]))
        assert identity.current(session, d) == a
    assert tombstones == {a: None, b: a, c: a, d: a}
    for identifiers in (ids_a, ids_b, ids_c, ids_d):
        assert resolved_id(api, keys, identifiers) == a

    body = consents_of(api, keys, d)
    assert body["subject_id"] == a
    assert {h["subject_id"] for h in body["history"]} == {a, b, c, d}
    assert all(h["evidence"] is not None for h in body["history"])
    assert {h["evidence"]["user_agent"] for h in body["history"]} == {
        "ua-a",
        "ua-b",
        "ua-c",
        "ua-d",
        "ua-cd",
        "ua-ab",
        "ua-ac",
    }
    # D's analytics denial (01-04) is later than C's grant (01-03); C's marketing denial (01-05)
    # is earlier than the A+B grant (01-06).
    state = {s["purpose"]: s["status"] for s in body["state"]}
    assert state == {
        "analytics": "denied",
        "marketing": "granted",
        "personalize": "granted",
        "third_party_sharing": "denied",
    }
    assert _current_preferences(runtime, a) == {"from_a": "FROM_A", "from_d": "FROM_D"}


def test_one_request_naming_three_subjects_merges_all_into_the_oldest(
    api: TestClient, keys: Any, runtime: Runtime
) -> None:
    ids = [{"anonymous_id": "a"}, {"email": "b@x.io"}, {"user_id": "c"}]
    subjects = [post_consent(api, keys, identifiers=i)["subject_id"] for i in ids]
    merged = post_consent(api, keys, identifiers={k: v for i in ids for k, v in i.items()})
    assert merged["subject_id"] == subjects[0]
    assert _merges(runtime) == {subjects[1]: subjects[0], subjects[2]: subjects[0]}
    history = consents_of(api, keys, subjects[2])["history"]
    assert {h["subject_id"] for h in history} == set(subjects)
    assert all(h["evidence"] is not None for h in history)
