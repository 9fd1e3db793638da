"""Small HTTP helpers shared by the identity, crypto and preferences tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body


def post_consent(api: TestClient, keys: Keys, **overrides: Any) -> dict[str, Any]:
    """Post a consent (see ``consent_body``) and return the receipt; fails the test unless 201."""
    answer = api.post("/v1/consents", headers=keys.header("collector"), json=consent_body(**overrides))
    assert answer.status_code == 201, answer.text
    receipt: dict[str, Any] = answer.json()
    return receipt


def resolve(api: TestClient, keys: Keys, identifiers: dict[str, str], role: str = "privacy") -> Any:
    return api.post("/v1/subjects/resolve", headers=keys.header(role), json={"identifiers": identifiers})


def resolved_id(api: TestClient, keys: Keys, identifiers: dict[str, str]) -> str:
    answer = resolve(api, keys, identifiers)
    assert answer.status_code == 200, answer.text
    subject_id: str = answer.json()["subject_id"]
    return subject_id


def consents_of(api: TestClient, keys: Keys, subject_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/subjects/{subject_id}/consents", headers=keys.header("privacy"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def post_preferences(
    api: TestClient,
    keys: Keys,
    identifiers: dict[str, str],
    preferences: list[dict[str, Any]],
    *,
    declared_at: str = "2026-02-01T09:00:00Z",
    source: str = "profile-page",
    headers: dict[str, str] | None = None,
) -> Any:
    body = {"identifiers": identifiers, "preferences": preferences, "source": source, "declared_at": declared_at}
    return api.post("/v1/preferences", headers={**keys.header("collector"), **(headers or {})}, json=body)


def pref(key: str, value: Any, category: str = "user.preferences.interests") -> dict[str, Any]:
    return {"key": key, "value": value, "category": category}


def keystore_rows(runtime: Runtime) -> list[tuple[str, str, str]]:
    """(key_id, subject_id, master_key_id) of every data key."""
    with runtime.keystore.engine.connect() as conn:
        rows = conn.execute(text("SELECT key_id, subject_id, master_key_id FROM data_keys ORDER BY key_id"))
        return [(str(a), str(b), str(c)) for a, b, c in rows]
