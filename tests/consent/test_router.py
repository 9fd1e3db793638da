"""Consent API, end to end through the ASGI app: receipts, state and history, idempotent retries,
the Global Privacy Control signal, out-of-order decisions, expiry, the purpose hierarchy and grants."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import text

from profilestore.auth import service as clients
from profilestore.auth.schemas import ClientIn, Role
from profilestore.config import Settings
from profilestore.consent import service
from profilestore.consent.rules import Effective
from profilestore.purposes import service as purposes
from profilestore.runtime import Runtime
from tests.conftest import CONSENT_VALID_DAYS, Keys, consent_body, row_counts

GPC_PURPOSES = {
    "third_party_sharing",
    "marketing.advertising.first_party.targeted",
    "marketing.advertising.third_party.targeted",
}


# -- helpers ---------------------------------------------------------------------------------------


def ago(**delta: float) -> str:
    """An ISO timestamp ``delta`` before now (UTC)."""
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def post(api: TestClient, keys: Keys, body: dict[str, Any], **headers: str) -> httpx.Response:
    return api.post("/v1/consents", headers={**keys.header("collector"), **headers}, json=body)


def grant(api: TestClient, keys: Keys, purposes_: dict[str, str], collected_at: str, **headers: str) -> dict[str, Any]:
    answer = post(api, keys, consent_body(purposes=purposes_, collected_at=collected_at), **headers)
    assert answer.status_code == 201, answer.text
    receipt: dict[str, Any] = answer.json()
    return receipt


def consents(api: TestClient, keys: Keys, subject_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/subjects/{subject_id}/consents", headers=keys.header("privacy"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def state_of(api: TestClient, keys: Keys, subject_id: str) -> dict[str, dict[str, Any]]:
    return {s["purpose"]: s for s in consents(api, keys, subject_id)["state"]}


def in_force(runtime: Runtime, subject_id: str) -> dict[str, Effective]:
    with runtime.db.transaction(write=False) as session:
        return service.in_force(session, subject_id)


def effective_status(runtime: Runtime, subject_id: str, purpose: str) -> Effective:
    with runtime.db.transaction(write=False) as session:
        rule = purposes.rules(session, [purpose])[purpose]
        return service.effective_status(session, subject_id, rule)


def set_validity(api: TestClient, keys: Keys, purpose: str, days: int) -> None:
    current = api.get(f"/v1/purposes/{purpose}", headers=keys.header("admin")).json()
    answer = api.put(
        f"/v1/purposes/{purpose}",
        headers=keys.header("admin"),
        json={
            "name": current["name"],
            "legal_basis": current["legal_basis"],
            "retention_days": current["retention_days"],
            "consent_valid_days": days,
            "categories": current["categories"],
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["consent_valid_days"] == days


# -- receipts, state and history -------------------------------------------------------------------


def test_consent_post_returns_a_receipt_and_reads_back(api: TestClient, keys: Keys) -> None:
    # Collected recently, as a form would post it.
    posted = api.post("/v1/consents", headers=keys.header("collector"), json=consent_body(collected_at=ago(hours=1)))
    assert posted.status_code == 201, posted.text
    receipt = posted.json()
    assert receipt["subject_id"].startswith("sub_")
    assert [r["purpose"] for r in receipt["records"]] == ["personalize.content.profiling"]

    read = api.get(f"/v1/subjects/{receipt['subject_id']}/consents", headers=keys.header("privacy"))
    assert read.status_code == 200
    body = read.json()
    assert [(s["purpose"], s["status"]) for s in body["state"]] == [("personalize.content.profiling", "granted")]
    assert body["history"][0]["record_id"] == receipt["records"][0]["record_id"]
    assert body["history"][0]["evidence"] == {"user_agent": "Mozilla/5.0 (X11)", "ip": "203.0.113.0", "locale": "en-GB"}


def test_unknown_purpose_is_refused_and_writes_nothing(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)
    answer = api.post(
        "/v1/consents", headers=keys.header("collector"), json=consent_body(purposes={"personalize.nope": "granted"})
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "consents.0.purpose"
    assert "personalize.nope" in answer.json()["error"]["message"]
    assert row_counts(runtime) == before


def test_receipt_has_one_record_per_decision_with_its_hash_and_expiry(api: TestClient, keys: Keys) -> None:
    collected = ago(days=3)
    before = datetime.now(UTC)
    receipt = grant(api, keys, {"personalize": "granted", "marketing": "denied", "analytics": "withdrawn"}, collected)
    after = datetime.now(UTC)

    assert receipt["receipt_id"]
    assert before - timedelta(seconds=1) <= when(receipt["recorded_at"]) <= after + timedelta(seconds=1)
    records = {r["purpose"]: r for r in receipt["records"]}
    assert {p: r["status"] for p, r in records.items()} == {
        "personalize": "granted",
        "marketing": "denied",
        "analytics": "withdrawn",
    }
    assert len({r["record_id"] for r in receipt["records"]}) == 3
    assert len({r["hash"] for r in receipt["records"]}) == 3
    assert all(len(r["hash"]) == 64 and int(r["hash"], 16) >= 0 for r in receipt["records"])
    assert all(when(r["collected_at"]) == when(collected) for r in receipt["records"])
    assert all(r["source"] == "signup-form" for r in receipt["records"])
    # A grant expires after the purpose's consent validity (the default, here); other decisions never.
    assert when(records["personalize"]["expires_at"]) == when(collected) + timedelta(days=CONSENT_VALID_DAYS)
    assert records["marketing"]["expires_at"] is None
    assert records["analytics"]["expires_at"] is None


def test_history_lists_every_record_in_ledger_order_with_its_details(api: TestClient, keys: Keys) -> None:
    first = grant(api, keys, {"personalize": "granted", "analytics": "granted"}, ago(days=5))
    second = grant(api, keys, {"analytics": "withdrawn"}, ago(days=4))
    third = grant(api, keys, {"personalize": "granted"}, ago(days=3))
    body = consents(api, keys, first["subject_id"])

    expected_ids = [r["record_id"] for receipt in (first, second, third) for r in receipt["records"]]
    history = body["history"]
    assert [h["record_id"] for h in history] == expected_ids
    assert [h["seq"] for h in history] == sorted(h["seq"] for h in history)
    assert [h["receipt_id"] for h in history] == [first["receipt_id"]] * 2 + [second["receipt_id"], third["receipt_id"]]
    for record in history:
        assert record["subject_id"] == first["subject_id"]
        assert record["notice"] == {"key": "signup", "version": 1}
        assert record["source"] == "signup-form"
        assert record["client_id"]
        assert when(record["recorded_at"]) >= when(record["collected_at"])
    # Consecutive records of one subject, with nobody else writing, are consecutive links.
    for earlier, later in pairwise(history):
        assert later["prev_hash"] == earlier["hash"]
    assert {s["purpose"]: s["status"] for s in body["state"]} == {"personalize": "granted", "analytics": "withdrawn"}


def test_state_reports_since_expiry_and_grant_start(api: TestClient, keys: Keys) -> None:
    collected = ago(days=2)
    receipt = grant(api, keys, {"personalize": "granted", "marketing": "denied"}, collected)
    state = state_of(api, keys, receipt["subject_id"])
    personalize, marketing = state["personalize"], state["marketing"]
    assert personalize["status"] == "granted"
    assert when(personalize["since"]) == when(collected)
    assert when(personalize["expires_at"]) == when(collected) + timedelta(days=CONSENT_VALID_DAYS)
    assert when(personalize["grant_started_at"]) == when(collected)
    assert personalize["record_id"] == receipt["records"][0]["record_id"]
    assert (marketing["status"], marketing["expires_at"], marketing["grant_started_at"]) == ("denied", None, None)


def test_evidence_reads_back_decrypted_with_the_ip_truncated_to_24_or_48_bits(api: TestClient, keys: Keys) -> None:
    posts = {
        "v6@example.com": {"user_agent": "curl/8", "ip": "2001:db8:85a3:8d3:1319:8a2e:370:7348", "locale": "de-DE"},
        "v4@example.com": {"ip": "198.51.100.254"},
        "none@example.com": None,
    }
    read = {}
    for email, evidence in posts.items():
        answer = post(api, keys, consent_body(email=email, evidence=evidence))
        assert answer.status_code == 201, answer.text
        read[email] = consents(api, keys, answer.json()["subject_id"])["history"][0]["evidence"]
    assert read == {
        "v6@example.com": {"user_agent": "curl/8", "ip": "2001:db8:85a3::", "locale": "de-DE"},
        "v4@example.com": {"user_agent": None, "ip": "198.51.100.0", "locale": None},
        "none@example.com": None,
    }


def test_evidence_is_stored_encrypted(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    post(api, keys, consent_body(evidence={"user_agent": "UniqueAgent/4.2", "ip": "203.0.113.9", "locale": "fr-CA"}))
    with runtime.db.engine.connect() as conn:
        blobs = [bytes(row[0]) for row in conn.execute(text("SELECT evidence_ct FROM consent_records"))]
    assert len(blobs) == 1
    assert b"UniqueAgent" not in blobs[0]
    assert b"203.0.113" not in blobs[0]
    assert b"fr-CA" not in blobs[0]


def test_consents_of_an_unknown_subject_are_not_found(api: TestClient, keys: Keys) -> None:
    answer = api.get("/v1/subjects/sub_00000000000000000000000000/consents", headers=keys.header("privacy"))
    assert answer.status_code == 404
    assert answer.json()["error"]["field"] == "subject_id"


def test_reading_consents_is_for_privacy_and_admin_clients(api: TestClient, keys: Keys) -> None:
    subject = grant(api, keys, {"personalize": "granted"}, ago(days=1))["subject_id"]
    url = f"/v1/subjects/{subject}/consents"
    assert api.get(url, headers=keys.header("privacy")).status_code == 200
    assert api.get(url, headers=keys.header("admin")).status_code == 200
    assert api.get(url, headers=keys.header("collector")).status_code == 403
    assert api.get(url, headers=keys.header("reader")).status_code == 403
    assert api.get(url).status_code == 401


# -- idempotency -----------------------------------------------------------------------------------


def test_retry_with_the_same_idempotency_key_replays_the_first_receipt_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    body = consent_body(purposes={"personalize": "granted", "analytics": "denied"}, collected_at=ago(hours=1))
    first = post(api, keys, body, **{"Idempotency-Key": "signup-42"})
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    before = row_counts(runtime)

    retry = post(api, keys, body, **{"Idempotency-Key": "signup-42"})
    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert row_counts(runtime) == before
    assert len(consents(api, keys, first.json()["subject_id"])["history"]) == 2


def test_idempotency_key_reused_for_a_different_body_is_refused_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    collected = ago(hours=1)
    first = post(api, keys, consent_body(collected_at=collected), **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    before = row_counts(runtime)

    other = consent_body(collected_at=collected, purposes={"personalize.content.profiling": "withdrawn"})
    answer = post(api, keys, other, **{"Idempotency-Key": "k-1"})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "Idempotency-Key"
    assert "different request" in answer.json()["error"]["message"]
    assert row_counts(runtime) == before


def test_idempotency_key_reused_with_the_gpc_signal_added_is_a_different_request(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    body = consent_body(collected_at=ago(hours=1))
    assert post(api, keys, body, **{"Idempotency-Key": "k-gpc"}).status_code == 201
    before = row_counts(runtime)
    answer = post(api, keys, body, **{"Idempotency-Key": "k-gpc", "Sec-GPC": "1"})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "Idempotency-Key"
    assert row_counts(runtime) == before


def test_idempotency_keys_are_per_client(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    with runtime.db.transaction() as session:
        other_key = clients.create_client(session, ClientIn(name="second-form", role=Role.collector)).key
    other = {"Authorization": f"Bearer {other_key}", "Idempotency-Key": "shared"}
    body = consent_body(collected_at=ago(hours=1))

    mine = post(api, keys, body, **{"Idempotency-Key": "shared"})
    theirs = api.post("/v1/consents", headers=other, json=body)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["receipt_id"] != mine.json()["receipt_id"]

    # Another client's different body under the same key is no conflict either.
    different = consent_body(collected_at=ago(hours=1), purposes={"analytics": "granted"})
    assert api.post("/v1/consents", headers=other | {"Idempotency-Key": "shared-2"}, json=different).status_code == 201
    assert post(api, keys, different, **{"Idempotency-Key": "shared-2"}).status_code == 201


def test_a_refused_request_does_not_use_up_its_idempotency_key(api: TestClient, keys: Keys) -> None:
    refused = post(api, keys, consent_body(purposes={"personalize.nope": "granted"}), **{"Idempotency-Key": "k-r"})
    assert refused.status_code == 422
    fixed = post(api, keys, consent_body(collected_at=ago(hours=1)), **{"Idempotency-Key": "k-r"})
    assert fixed.status_code == 201, fixed.text
    assert "Idempotent-Replayed" not in fixed.headers


def test_posts_without_an_idempotency_key_are_each_recorded(api: TestClient, keys: Keys) -> None:
    body = consent_body(collected_at=ago(hours=1))
    first, second = post(api, keys, body), post(api, keys, body)
    assert first.json()["receipt_id"] != second.json()["receipt_id"]
    assert len(consents(api, keys, first.json()["subject_id"])["history"]) == 2


def test_concurrent_retries_with_one_idempotency_key_record_once(api: TestClient, keys: Keys) -> None:
    headers = {**keys.header("collector"), "Idempotency-Key": "double-click"}
    body = consent_body(collected_at=ago(hours=1))
    start = threading.Barrier(6)

    def send(_: int) -> httpx.Response:
        with TestClient(api.app) as client:
            start.wait()
            return client.post("/v1/consents", headers=headers, json=body)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["receipt_id"] for a in answers}) == 1
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == [""] + ["true"] * 5
    assert len(consents(api, keys, answers[0].json()["subject_id"])["history"]) == 1


# -- Global Privacy Control ------------------------------------------------------------------------


def gpc_records(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((h["purpose"], h["status"]) for h in history if h["source"] == "gpc")


def test_the_default_gpc_purposes_are_sale_sharing_and_targeted_advertising() -> None:
    assert set(Settings().gpc_purposes) == GPC_PURPOSES


def test_gpc_header_records_withdrawals_with_source_gpc(api: TestClient, keys: Keys) -> None:
    receipt = grant(api, keys, {"personalize": "granted"}, ago(hours=1), **{"Sec-GPC": "1"})
    by_source = sorted((r["purpose"], r["status"], r["source"]) for r in receipt["records"])
    assert by_source == sorted(
        [("personalize", "granted", "signup-form")] + [(p, "withdrawn", "gpc") for p in GPC_PURPOSES]
    )
    state = state_of(api, keys, receipt["subject_id"])
    assert {p: state[p]["status"] for p in GPC_PURPOSES} == dict.fromkeys(GPC_PURPOSES, "withdrawn")
    assert state["personalize"]["status"] == "granted"


def test_a_second_gpc_post_adds_no_duplicate_withdrawals(api: TestClient, keys: Keys) -> None:
    subject = grant(api, keys, {"personalize": "granted"}, ago(hours=2), **{"Sec-GPC": "1"})["subject_id"]
    again = grant(api, keys, {"analytics": "granted"}, ago(hours=1), **{"Sec-GPC": "1"})
    assert [(r["purpose"], r["source"]) for r in again["records"]] == [("analytics", "signup-form")]
    history = consents(api, keys, subject)["history"]
    assert gpc_records(history) == sorted((p, "withdrawn") for p in GPC_PURPOSES)


def test_without_the_gpc_header_nothing_is_withdrawn_for_it(api: TestClient, keys: Keys) -> None:
    plain = grant(api, keys, {"personalize": "granted"}, ago(hours=2))
    off = grant(api, keys, {"analytics": "granted"}, ago(hours=1), **{"Sec-GPC": "0"})
    assert [r["purpose"] for r in plain["records"] + off["records"]] == ["personalize", "analytics"]
    body = consents(api, keys, plain["subject_id"])
    assert gpc_records(body["history"]) == []
    assert set(s["purpose"] for s in body["state"]) == {"personalize", "analytics"}


def test_gpc_withdraws_targeted_advertising_even_where_marketing_is_granted(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, {"marketing": "granted"}, ago(hours=2))["subject_id"]
    assert "marketing.advertising.first_party.targeted" in in_force(runtime, subject)

    grant(api, keys, {"personalize": "granted"}, ago(hours=1), **{"Sec-GPC": "1"})
    now_in_force = in_force(runtime, subject)
    assert "marketing.advertising.first_party.targeted" not in now_in_force
    assert "marketing.advertising.third_party.targeted" not in now_in_force
    assert now_in_force["marketing.communications.email"].decided_by == "marketing"


def test_gpc_withdraws_again_after_an_explicit_regrant(api: TestClient, keys: Keys) -> None:
    subject = grant(api, keys, {"personalize": "granted"}, ago(hours=3), **{"Sec-GPC": "1"})["subject_id"]
    grant(api, keys, {"third_party_sharing": "granted"}, ago(hours=2))
    assert state_of(api, keys, subject)["third_party_sharing"]["status"] == "granted"

    again = grant(api, keys, {"analytics": "granted"}, ago(hours=1), **{"Sec-GPC": "1"})
    assert ("third_party_sharing", "withdrawn", "gpc") in [
        (r["purpose"], r["status"], r["source"]) for r in again["records"]
    ]
    assert state_of(api, keys, subject)["third_party_sharing"]["status"] == "withdrawn"


# -- order of decisions ----------------------------------------------------------------------------


def test_a_late_grant_collected_before_a_withdrawal_leaves_it_withdrawn(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    withdrawal = grant(api, keys, {"personalize": "withdrawn"}, ago(hours=1))
    late = grant(api, keys, {"personalize": "granted"}, ago(hours=5))
    state = state_of(api, keys, withdrawal["subject_id"])["personalize"]
    assert (state["status"], state["record_id"]) == ("withdrawn", withdrawal["records"][0]["record_id"])
    assert state["grant_started_at"] is None
    assert "personalize" not in in_force(runtime, withdrawal["subject_id"])
    # The late grant is in the ledger all the same.
    history = consents(api, keys, withdrawal["subject_id"])["history"]
    assert [h["record_id"] for h in history] == [withdrawal["records"][0]["record_id"], late["records"][0]["record_id"]]


def test_a_late_withdrawal_collected_before_a_grant_leaves_it_granted(api: TestClient, keys: Keys) -> None:
    granted = grant(api, keys, {"personalize": "granted"}, ago(hours=1))
    grant(api, keys, {"personalize": "withdrawn"}, ago(hours=5))
    state = state_of(api, keys, granted["subject_id"])["personalize"]
    assert (state["status"], state["record_id"]) == ("granted", granted["records"][0]["record_id"])


def test_decisions_collected_at_the_same_instant_resolve_by_arrival(api: TestClient, keys: Keys) -> None:
    instant = ago(hours=1)
    subject = grant(api, keys, {"personalize": "granted", "analytics": "withdrawn"}, instant)["subject_id"]
    second = grant(api, keys, {"personalize": "withdrawn", "analytics": "granted"}, instant)
    state = state_of(api, keys, subject)
    assert state["personalize"]["status"] == "withdrawn"
    assert state["analytics"]["status"] == "granted"
    assert {state[p]["record_id"] for p in ("personalize", "analytics")} == {r["record_id"] for r in second["records"]}


# -- expiry ----------------------------------------------------------------------------------------


def test_a_grant_is_expired_once_older_than_its_purposes_validity(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    set_validity(api, keys, "personalize.content.profiling", 30)
    collected = ago(days=31)
    receipt = grant(api, keys, {"personalize.content.profiling": "granted"}, collected)
    record = receipt["records"][0]
    assert when(record["expires_at"]) == when(collected) + timedelta(days=30)

    state = state_of(api, keys, receipt["subject_id"])["personalize.content.profiling"]
    assert state["status"] == "expired"
    assert when(state["expires_at"]) == when(collected) + timedelta(days=30)
    verdict = effective_status(runtime, receipt["subject_id"], "personalize.content.profiling")
    assert (verdict.in_force, verdict.status) == (False, "expired")
    assert "personalize.content.profiling" not in in_force(runtime, receipt["subject_id"])

    fresh = post(api, keys, consent_body(email="fresh@example.com", collected_at=ago(days=29))).json()["subject_id"]
    assert state_of(api, keys, fresh)["personalize.content.profiling"]["status"] == "granted"
    verdict = effective_status(runtime, fresh, "personalize.content.profiling")
    assert (verdict.in_force, verdict.status) == (True, "granted")


def test_an_expired_parent_grant_no_longer_covers_its_children(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    set_validity(api, keys, "personalize", 10)
    subject = grant(api, keys, {"personalize": "granted"}, ago(days=11))["subject_id"]
    verdict = effective_status(runtime, subject, "personalize.content.profiling")
    assert (verdict.in_force, verdict.status, verdict.decided_by) == (False, "expired", "personalize")
    assert not [p for p in in_force(runtime, subject) if p.startswith("personalize")]


# -- hierarchy -------------------------------------------------------------------------------------


def test_consent_to_a_parent_covers_its_children(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, {"personalize": "granted"}, ago(hours=1))["subject_id"]
    now_in_force = in_force(runtime, subject)
    for child in ("personalize", "personalize.content", "personalize.content.profiling", "personalize.system"):
        assert now_in_force[child].decided_by == "personalize"
    assert "marketing" not in now_in_force


def test_a_childs_own_withdrawal_beats_the_parents_grant(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, {"personalize": "granted"}, ago(hours=2))["subject_id"]
    grant(api, keys, {"personalize.content.profiling": "withdrawn"}, ago(hours=1))
    now_in_force = in_force(runtime, subject)
    assert "personalize.content.profiling" not in now_in_force
    assert now_in_force["personalize.content.limited"].decided_by == "personalize"
    assert now_in_force["personalize.content"].decided_by == "personalize"
    verdict = effective_status(runtime, subject, "personalize.content.profiling")
    assert (verdict.status, verdict.decided_by) == ("withdrawn", "personalize.content.profiling")


def test_consent_to_a_child_does_not_cover_its_parent(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, {"personalize.content.profiling": "granted"}, ago(hours=1))["subject_id"]
    now_in_force = in_force(runtime, subject)
    assert "personalize.content.profiling" in now_in_force
    for other in ("personalize", "personalize.content", "personalize.content.limited"):
        assert other not in now_in_force
    assert effective_status(runtime, subject, "personalize").status == "none"


def test_purposes_not_resting_on_consent_are_in_force_without_any_record(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, {"analytics": "denied"}, ago(hours=1))["subject_id"]
    now_in_force = in_force(runtime, subject)
    assert now_in_force["essential"].status == "not_required"
    assert now_in_force["essential.service.security"].status == "not_required"
    assert not [p for p in now_in_force if p.startswith(("analytics", "personalize", "marketing"))]


# -- grants ----------------------------------------------------------------------------------------


def test_a_renewal_before_expiry_keeps_the_grant_start(api: TestClient, keys: Keys) -> None:
    set_validity(api, keys, "personalize", 30)
    first = ago(days=40)
    subject = grant(api, keys, {"personalize": "granted"}, first)["subject_id"]
    renewal = ago(days=20)  # the first grant ran until 10 days ago
    grant(api, keys, {"personalize": "granted"}, renewal)
    state = state_of(api, keys, subject)["personalize"]
    assert state["status"] == "granted"
    assert when(state["grant_started_at"]) == when(first)
    assert when(state["since"]) == when(renewal)
    assert when(state["expires_at"]) == when(renewal) + timedelta(days=30)


def test_a_regrant_after_expiry_starts_a_new_grant(api: TestClient, keys: Keys) -> None:
    set_validity(api, keys, "personalize", 30)
    subject = grant(api, keys, {"personalize": "granted"}, ago(days=70))["subject_id"]
    regrant = ago(days=20)  # the first grant lapsed 40 days ago
    grant(api, keys, {"personalize": "granted"}, regrant)
    state = state_of(api, keys, subject)["personalize"]
    assert (state["status"], when(state["grant_started_at"])) == ("granted", when(regrant))


def test_withdrawal_then_regrant_starts_a_new_grant(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    first = ago(days=10)
    subject = grant(api, keys, {"personalize": "granted"}, first)["subject_id"]
    assert when(state_of(api, keys, subject)["personalize"]["grant_started_at"]) == when(first)

    grant(api, keys, {"personalize": "withdrawn"}, ago(days=5))
    state = state_of(api, keys, subject)["personalize"]
    assert (state["status"], state["grant_started_at"]) == ("withdrawn", None)

    regrant = ago(days=1)
    grant(api, keys, {"personalize": "granted"}, regrant)
    state = state_of(api, keys, subject)["personalize"]
    assert (state["status"], when(state["grant_started_at"])) == ("granted", when(regrant))
    assert in_force(runtime, subject)["personalize.content"].grant_started_at == when(regrant)


# -- merges ----------------------------------------------------------------------------------------


def test_after_a_merge_the_decision_collected_last_wins_whichever_subject_had_it(api: TestClient, keys: Keys) -> None:
    anonymous = post(
        api,
        keys,
        consent_body(
            identifiers={"anonymous_id": "anon-42"}, purposes={"analytics": "withdrawn"}, collected_at=ago(days=1)
        ),
    ).json()
    known = grant(api, keys, {"analytics": "granted", "personalize": "granted"}, ago(days=2))
    assert anonymous["subject_id"] != known["subject_id"]

    both = post(
        api,
        keys,
        consent_body(
            identifiers={"email": "ada@example.com", "anonymous_id": "anon-42"},
            purposes={"marketing": "granted"},
            collected_at=ago(hours=1),
        ),
    )
    assert both.status_code == 201, both.text
    survivor = both.json()["subject_id"]
    assert survivor in (anonymous["subject_id"], known["subject_id"])

    for asked in (anonymous["subject_id"], known["subject_id"]):
        body = consents(api, keys, asked)
        assert body["subject_id"] == survivor
        state = {s["purpose"]: s["status"] for s in body["state"]}
        assert state == {"analytics": "withdrawn", "personalize": "granted", "marketing": "granted"}
        assert len(body["history"]) == 4
        assert all(h["evidence"]["ip"] == "203.0.113.0" for h in body["history"])
