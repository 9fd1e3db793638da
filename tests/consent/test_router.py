"""Consent API, end to end through the ASGI app."""

from __future__ import annotations

from fastapi.testclient import TestClient

from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body, row_counts


def test_consent_post_returns_a_receipt_and_reads_back(api: TestClient, keys: Keys) -> None:
    posted = api.post("/v1/consents", headers=keys.header("collector"), json=consent_body())
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
