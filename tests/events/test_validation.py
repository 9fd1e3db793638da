"""Bad event batches: a 4xx naming the problem and the field, and nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from profilestore.runtime import Runtime
from tests.conftest import Keys, row_counts
from tests.events.support import event, grant, iso, post_events, stored_events

ADA = {"email": "ada@example.com"}
Batch = Callable[[Runtime], list[dict[str, Any]]]


def _good(message_id: str = "good") -> dict[str, Any]:
    return event(ADA, message_id)


def _without(key: str) -> dict[str, Any]:
    bad = _good("bad")
    del bad[key]
    return bad


def _with(**changes: Any) -> dict[str, Any]:
    return {**_good("bad"), **changes}


BAD_BATCHES: dict[str, tuple[Batch, int, str, str]] = {
    # name: (batch, status, field, words the message must contain)
    "missing type": (lambda _: [_good(), _without("type")], 422, "events.1.type", "required"),
    "type not snake_case": (lambda _: [_with(type="Product Viewed")], 422, "events.0.type", "pattern"),
    "type in camel case": (lambda _: [_with(type="productViewed")], 422, "events.0.type", "pattern"),
    "properties a list": (lambda _: [_with(properties=["Shoes"])], 422, "events.0.properties", "dictionary"),
    "properties a string": (lambda _: [_with(properties="Shoes")], 422, "events.0.properties", "dictionary"),
    "occurred_at without zone": (
        lambda _: [_with(occurred_at="2026-01-15T10:00:00")],
        422,
        "events.0.occurred_at",
        "time zone",
    ),
    "occurred_at beyond the clock skew": (
        lambda _: [_good(), _with(occurred_at=iso(datetime.now(UTC) + timedelta(seconds=400)))],
        422,
        "events.1.occurred_at",
        "future",
    ),
    "unknown category": (
        lambda _: [_with(category="user.behavior.no_such_history")],
        422,
        "events.0.category",
        "unknown data category",
    ),
    "unknown field": (lambda _: [_with(colour="red")], 422, "events.0.colour", "unknown field"),
    "malformed email": (
        lambda _: [_good(), _with(identifiers={"email": "not-an-email"})],
        422,
        "events.1.identifiers.email",
        "email",
    ),
    "unknown identifier kind": (
        lambda _: [_with(identifiers={"cookie": "abc"})],
        422,
        "events.0.identifiers.cookie",
        "unknown field",
    ),
    "no identifiers": (lambda _: [_with(identifiers={})], 422, "events.0.identifiers", "identifier"),
    "empty message_id": (lambda _: [_with(message_id="")], 422, "events.0.message_id", "at least 1"),
    "empty batch": (lambda _: [], 422, "events", "at least 1"),
    "more events than a batch may hold": (
        lambda rt: [_good(f"m-{i}") for i in range(rt.settings.events.max_batch_events + 1)],
        413,
        "events",
        "at most 1000",
    ),
    "properties over the per-event limit": (
        lambda rt: [_good(), _with(properties={"blob": "x" * rt.settings.events.max_event_bytes})],
        413,
        "events.1.properties",
        "limit",
    ),
}


def test_each_malformed_batch_is_refused_naming_the_field_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """One store for all cases (setting one up per case costs more than the cases): every case is
    checked and every mismatch reported."""
    grant(api, keys, ADA)
    before = row_counts(runtime)
    mismatches = []

    for case, (make, status, field, words) in BAD_BATCHES.items():
        answer = post_events(api, keys, make(runtime))
        error = answer.json().get("error") or {}
        got = (answer.status_code, error.get("field"), words.lower() in str(error.get("message", "")).lower())
        if got != (status, field, True) or "not-an-email" in answer.text:
            mismatches.append(f"{case}: expected {status} on {field} saying '{words}', got {answer.text}")
        if row_counts(runtime) != before:
            mismatches.append(f"{case}: wrote rows")
            before = row_counts(runtime)

    assert mismatches == []


def test_a_full_batch_at_the_limits_is_accepted(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    limit = runtime.settings.events.max_batch_events
    soon = datetime.now(UTC) + timedelta(seconds=runtime.settings.clock_skew_seconds - 60)
    batch = [event(ADA, f"m-{i}") for i in range(limit - 2)]
    batch.append(event(ADA, "big", properties={"blob": "x" * (runtime.settings.events.max_event_bytes - 100)}))
    batch.append(event(ADA, "soon", occurred_at=soon))

    answer = post_events(api, keys, batch)

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == limit
    assert len(stored_events(runtime)) == limit


def test_events_need_a_key(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    before = row_counts(runtime)

    answer = api.post("/v1/events", json={"events": [_good()]})

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"
    wrong = api.post("/v1/events", headers={"Authorization": "Bearer psk_not_a_key"}, json={"events": [_good()]})
    assert wrong.status_code == 401
    assert row_counts(runtime) == before


def test_only_collectors_may_post_events(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    before = row_counts(runtime)

    for role in ("reader", "privacy", "admin"):
        answer = post_events(api, keys, [_good()], role=role)
        assert answer.status_code == 403, role
        assert answer.json()["error"]["code"] == "forbidden"
    assert row_counts(runtime) == before


def test_the_per_event_size_limit_counts_bytes_not_escaped_characters(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """12,000 'é' are 24 KB of UTF-8 (under the 32 KB limit) but 72 KB once JSON-escaped to ASCII."""
    grant(api, keys, ADA)
    properties = {"name": "é" * 12_000}
    assert len(json.dumps(properties, ensure_ascii=False).encode()) < runtime.settings.events.max_event_bytes

    answer = post_events(api, keys, [event(ADA, "m-1", properties=properties)])

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
