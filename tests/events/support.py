"""Helpers shared by the event, signal and end-to-end tests: posting consent and events, and
reading what the store kept straight from its tables (through the ORM, so timestamps come back
aware on both backends)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from profilestore.auth import service as clients
from profilestore.auth.schemas import ClientIn, Role
from profilestore.consent.models import ConsentRecord, ConsentState
from profilestore.events.models import Event
from profilestore.metrics import EVENTS
from profilestore.preferences import service as preferences
from profilestore.runtime import Runtime
from profilestore.signals import service as signals
from profilestore.signals.models import Signal, SignalBucket, SignalValue
from tests.conftest import Keys, consent_body


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def grant(
    api: TestClient,
    keys: Keys,
    identifiers: dict[str, str],
    purposes: dict[str, str] | None = None,
    *,
    at: datetime | None = None,
) -> str:
    """Post a consent decision (default: personalize granted now); returns the subject id."""
    body = consent_body(
        identifiers=identifiers,
        purposes=purposes or {"personalize": "granted"},
        collected_at=iso(at or datetime.now(UTC)),
    )
    answer = api.post("/v1/consents", headers=keys.header("collector"), json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["subject_id"])


def event(
    identifiers: dict[str, str],
    message_id: str,
    *,
    type: str = "product_viewed",
    properties: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "identifiers": identifiers,
        "type": type,
        "properties": {"category": "Shoes"} if properties is None else properties,
        "occurred_at": iso(occurred_at or datetime.now(UTC)),
        "message_id": message_id,
        **extra,
    }


def post_events(api: TestClient, keys: Keys, events: Sequence[dict[str, Any]], role: str = "collector") -> Any:
    return api.post("/v1/events", headers=keys.header(role), json={"events": list(events)})


def ingest(api: TestClient, keys: Keys, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Post a batch that must succeed; returns the answer body."""
    answer = post_events(api, keys, events)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def stored_events(runtime: Runtime, subject_id: str | None = None) -> list[Event]:
    with runtime.db.transaction(write=False) as session:
        query = select(Event).order_by(Event.occurred_at, Event.message_id)
        if subject_id is not None:
            query = query.where(Event.subject_id == subject_id)
        return list(session.scalars(query))


def stored_signals(runtime: Runtime, subject_id: str | None = None) -> list[Signal]:
    with runtime.db.transaction(write=False) as session:
        query = select(Signal).order_by(Signal.dimension, Signal.last_seen)
        if subject_id is not None:
            query = query.where(Signal.subject_id == subject_id)
        return list(session.scalars(query))


def consent_state(runtime: Runtime, subject_id: str, purpose: str) -> ConsentState:
    with runtime.db.transaction(write=False) as session:
        row = session.get(ConsentState, (subject_id, purpose))
        assert row is not None, f"no consent state for {purpose}"
        return row


def consent_records(runtime: Runtime) -> list[ConsentRecord]:
    with runtime.db.transaction(write=False) as session:
        return list(session.scalars(select(ConsentRecord).order_by(ConsentRecord.seq)))


def restrict(runtime: Runtime, subject_id: str) -> None:
    with runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE subjects SET status = 'restricted' WHERE id = :id"), {"id": subject_id})


def new_collector(runtime: Runtime, name: str) -> str:
    """A second collector client (another site or app); returns its key."""
    with runtime.db.transaction() as session:
        return clients.create_client(session, ClientIn(name=name, role=Role.collector, purposes=[])).key


@dataclass(frozen=True)
class EventCounter:
    """Reads the Prometheus event counter; take a snapshot before, compare after."""

    outcome: str
    reason: str = ""

    def value(self) -> float:
        return float(EVENTS.labels(self.outcome, self.reason)._value.get())


def current_preferences(runtime: Runtime, subject_id: str) -> dict[str, Any]:
    """The subject's current declared preferences, decrypted: key → (value, category, source)."""
    with runtime.db.transaction(write=False) as session:
        found = preferences.current(session, runtime.vault.cipher(subject_id))
    return {p.key: (p.value, p.category, p.source) for p in found}


def basic_auth(key: str) -> dict[str, str]:
    """Segment-style: the write key as the HTTP Basic user, empty password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def segment_message(kind: str = "track", **fields: Any) -> dict[str, Any]:
    """A Segment message as the SDKs send it (override or drop any field)."""
    message: dict[str, Any] = {
        "type": kind,
        "messageId": fields.pop("messageId", f"msg-{uuid.uuid4()}"),
        "anonymousId": "anon-seg-1",
        "timestamp": iso(datetime.now(UTC)),
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}},
    }
    if kind == "track":
        message["event"] = "Product Viewed"
        message["properties"] = {"category": "Shoes"}
    message.update(fields)
    return {k: v for k, v in message.items() if v is not None}


def consent_context(**categories: bool) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": categories}}


def assert_value_sums_agree(runtime: Runtime) -> None:
    """Every value's sum (``signal_values``) is what its bucket rows add up to, and every subject's
    noted buckets (``signal_buckets``) are those its bucket rows are kept in: worked out here from
    the bucket rows, decayed to one time by the half-life written out again. Where no sums are
    kept (``signals.keeps_sums``), both tables stay empty."""
    half_life = runtime.settings.signals.half_life_days
    at = datetime.now(UTC)

    def now_score(score: float, held_at: datetime) -> float:
        return score * 0.5 ** ((at - held_at).total_seconds() / 86_400.0 / half_life)

    with runtime.db.transaction(write=False) as session:
        buckets = list(session.scalars(select(Signal)))
        sums = list(session.scalars(select(SignalValue)))
        noted = {(b.subject_id, b.category, b.epoch) for b in session.scalars(select(SignalBucket))}
    if not signals.keeps_sums(runtime.db.engine.dialect.name):  # PostgreSQL: views sum the buckets
        assert (sums, noted) == ([], set())
        return
    expected: dict[tuple[str, str, bytes], list[Any]] = {}
    for row in buckets:
        key = (row.subject_id, row.dimension, bytes(row.value_index))
        score, evidence, last_seen = now_score(row.score, row.score_at), row.evidence, row.last_seen
        if key in expected:
            total = expected[key]
            score, evidence, last_seen = total[0] + score, total[1] + evidence, max(total[2], last_seen)
        expected[key] = [score, evidence, last_seen, row.value_ct]
    assert {(s.subject_id, s.dimension, bytes(s.value_index)) for s in sums} == set(expected)
    for s in sums:
        score, evidence, last_seen, sealed = expected[(s.subject_id, s.dimension, bytes(s.value_index))]
        assert (s.evidence, s.last_seen) == (evidence, last_seen)
        assert now_score(s.score, s.score_at) == pytest.approx(score, rel=1e-9)
        cipher, key = runtime.vault.cipher(s.subject_id), signals.row_key(s.dimension, bytes(s.value_index))
        assert cipher.decrypt("signals", "value", key, s.value_ct) == cipher.decrypt("signals", "value", key, sealed)
    assert noted == {(row.subject_id, row.category, row.epoch) for row in buckets}
