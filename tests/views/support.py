"""Driving the store through its HTTP API for view tests: consents, events, preferences,
policies and reads, each asserting the call itself succeeded."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import text

from profilestore.auth import service as clients
from profilestore.auth.schemas import ClientIn, Role
from profilestore.kit.time import utcnow
from profilestore.runtime import Runtime
from tests.conftest import CONSENT_VALID_DAYS, Keys, consent_body

ANON = {"anonymous_id": "visitor-1"}
VIEW_PURPOSE = "personalize.content"
_message_ids = itertools.count()


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def days_ago(days: float) -> datetime:
    return utcnow() - timedelta(days=days)


def reader_key(runtime: Runtime, *purposes: str, name: str = "wide-reader") -> str:
    """A further reader client, allowed for ``purposes``."""
    with runtime.db.transaction() as session:
        return clients.create_client(session, ClientIn(name=name, role=Role.reader, purposes=list(purposes))).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Store:
    """One person's data posted through the API, as the collector client would."""

    def __init__(self, api: TestClient, keys: Keys, identifiers: dict[str, str] | None = None) -> None:
        self.api = api
        self.keys = keys
        self.identifiers = identifiers or dict(ANON)

    def consent(self, purposes: dict[str, str], *, at: datetime | None = None) -> str:
        body = consent_body(identifiers=self.identifiers, purposes=purposes, collected_at=iso(at or utcnow()))
        answer = self.api.post("/v1/consents", headers=self.keys.header("collector"), json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["subject_id"])

    def events(
        self,
        n: int,
        properties: dict[str, Any],
        *,
        type: str = "product_viewed",
        occurred: datetime | None = None,
        category: str | None = None,
        expect_accepted: int | None = None,
    ) -> dict[str, Any]:
        when = iso(occurred or utcnow())
        events = []
        for _ in range(n):
            event: dict[str, Any] = {
                "identifiers": self.identifiers,
                "type": type,
                "properties": properties,
                "occurred_at": when,
                "message_id": f"msg-{next(_message_ids)}",
            }
            if category is not None:
                event["category"] = category
            events.append(event)
        answer = self.api.post("/v1/events", headers=self.keys.header("collector"), json={"events": events})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert body["accepted"] == (n if expect_accepted is None else expect_accepted), body
        return body

    def prefer(
        self,
        key: str,
        value: Any,
        *,
        category: str = "user.preferences.interests",
        declared_at: datetime | None = None,
        expect_stored: int = 1,
    ) -> None:
        body = {
            "identifiers": self.identifiers,
            "preferences": [{"key": key, "value": value, "category": category}],
            "source": "profile-page",
            "declared_at": iso(declared_at or utcnow()),
        }
        answer = self.api.post("/v1/preferences", headers=self.keys.header("collector"), json=body)
        assert answer.status_code == 201, answer.text
        assert answer.json()["stored"] == expect_stored, answer.text


def set_policy(
    api: TestClient,
    keys: Keys,
    purpose: str,
    categories: list[str],
    *,
    legal_basis: str = "consent",
    consent_valid_days: int = CONSENT_VALID_DAYS,
) -> None:
    answer = api.put(
        f"/v1/purposes/{purpose}",
        headers=keys.header("admin"),
        json={
            "name": purpose,
            "legal_basis": legal_basis,
            "retention_days": 730,
            "consent_valid_days": consent_valid_days,
            "categories": categories,
        },
    )
    assert answer.status_code == 200, answer.text


def get_view(
    api: TestClient, headers: dict[str, str], subject_id: str, purpose: str = VIEW_PURPOSE, **params: Any
) -> httpx.Response:
    return api.get(f"/v1/subjects/{subject_id}/view", headers=headers, params={"purpose": purpose, **params})


def view(api: TestClient, keys: Keys, subject_id: str, purpose: str = VIEW_PURPOSE, **params: Any) -> dict[str, Any]:
    """The reader's view, which must be a 200."""
    answer = get_view(api, keys.header("reader"), subject_id, purpose, **params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def values(body: dict[str, Any], dimension: str = "category") -> list[str]:
    return [s["value"] for s in body["signals"].get(dimension, [])]


def restrict(runtime: Runtime, subject_id: str) -> None:
    with runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE subjects SET status = 'restricted' WHERE id = :id"), {"id": subject_id})


def without_scores(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The signals of a view with scores rounded: they decay between two reads."""
    return {
        dimension: [{**s, "score": round(s["score"], 4)} for s in ranked]
        for dimension, ranked in body["signals"].items()
    }
