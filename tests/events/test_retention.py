"""`profilestore purge`: events past retention or out of consent go, and their signals with them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from profilestore.cli import app as cli
from profilestore.events import retention
from profilestore.kit.time import utcnow
from profilestore.runtime import Runtime
from tests.conftest import CONSENT_VALID_DAYS, Keys, consent_body

ANON = {"anonymous_id": "visitor-1"}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _consent(api: TestClient, keys: Keys, status: str, purpose: str = "personalize", at: datetime | None = None) -> str:
    body = consent_body(identifiers=ANON, purposes={purpose: status}, collected_at=_iso(at or utcnow()))
    answer = api.post("/v1/consents", headers=keys.header("collector"), json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["subject_id"])


def _events(api: TestClient, keys: Keys, prefix: str, occurred: datetime, n: int = 3) -> None:
    events = [
        {
            "identifiers": ANON,
            "type": "product_viewed",
            "properties": {"category": "Shoes"},
            "occurred_at": _iso(occurred),
            "message_id": f"{prefix}-{i}",
        }
        for i in range(n)
    ]
    answer = api.post("/v1/events", headers=keys.header("collector"), json={"events": events})
    assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text


def _purge(runtime: Runtime) -> retention.PurgeReport:
    with runtime.db.transaction(write=False) as session:
        subjects = retention.subjects_with_events(session)
    return retention.purge(runtime.db.transaction, runtime.vault, runtime.settings, utcnow(), subjects)


def _count(runtime: Runtime, sql: str) -> int:
    with runtime.db.engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_purge_keeps_events_whose_grant_is_in_force(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    _consent(api, keys, "granted")
    _events(api, keys, "kept", utcnow())
    report = _purge(runtime)
    assert report.deleted == {}
    assert _count(runtime, "SELECT COUNT(*) FROM events") == 3


def test_withdrawal_purges_events_and_their_signals(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    _consent(api, keys, "granted")
    _events(api, keys, "gone", utcnow())
    assert _count(runtime, "SELECT COUNT(*) FROM signals") == 1
    _consent(api, keys, "withdrawn")

    report = _purge(runtime)

    assert report.deleted == {"withdrawn_or_expired": 3}
    assert _count(runtime, "SELECT COUNT(*) FROM events") == 0
    assert _count(runtime, "SELECT COUNT(*) FROM signals") == 0


def test_a_regrant_does_not_revive_what_was_collected_under_the_old_grant(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    _consent(api, keys, "granted", at=utcnow() - timedelta(minutes=3))
    _events(api, keys, "old", utcnow() - timedelta(minutes=3))
    _consent(api, keys, "withdrawn", at=utcnow() - timedelta(minutes=2))
    _consent(api, keys, "granted", at=utcnow() - timedelta(minutes=1))
    _events(api, keys, "new", utcnow(), n=2)

    report = _purge(runtime)

    assert report.deleted == {"withdrawn_or_expired": 3}
    with runtime.db.engine.connect() as conn:
        left = sorted(r[0] for r in conn.execute(text("SELECT message_id FROM events")))
        evidence = conn.execute(text("SELECT SUM(evidence) FROM signals")).scalar_one()
    assert left == ["new-0", "new-1"]
    assert evidence == 2


def test_retention_purges_old_events_and_rebuilds_their_signal_bucket(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    # A purpose of its own, the only one whose policy covers search history, kept for two days.
    spec = {
        "name": "Search analytics",
        "legal_basis": "consent",
        "retention_days": 2,
        "consent_valid_days": CONSENT_VALID_DAYS,
        "categories": ["user.behavior.search_history"],
    }
    admin = keys.header("admin")
    assert api.put("/v1/purposes/analytics.search", headers=admin, json=spec).status_code == 200
    notice = {"key": "search", "version": 1, "text": "We study searches.", "purposes": ["analytics.search"]}
    assert api.post("/v1/notices", headers=admin, json=notice).status_code == 201
    body = consent_body(
        identifiers=ANON, purposes={"analytics.search": "granted"}, notice={"key": "search", "version": 1}
    )
    body["collected_at"] = _iso(utcnow() - timedelta(days=10))
    assert api.post("/v1/consents", headers=keys.header("collector"), json=body).status_code == 201

    def search(prefix: str, occurred: datetime, n: int) -> None:
        events = [
            {
                "identifiers": ANON,
                "type": "search",
                "properties": {"category": "Shoes"},
                "occurred_at": _iso(occurred),
                "message_id": f"{prefix}-{i}",
            }
            for i in range(n)
        ]
        answer = api.post("/v1/events", headers=keys.header("collector"), json={"events": events})
        assert answer.json()["accepted"] == n, answer.text

    search("ancient", utcnow() - timedelta(days=5), 3)
    search("recent", utcnow() - timedelta(hours=1), 2)
    assert _count(runtime, "SELECT SUM(evidence) FROM signals") == 5

    report = _purge(runtime)

    assert report.deleted == {"retention": 3}
    assert report.signal_buckets_rebuilt == 1
    assert _count(runtime, "SELECT COUNT(*) FROM events") == 2
    assert _count(runtime, "SELECT SUM(evidence) FROM signals") == 2


def test_purge_command_prints_counts(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    _consent(api, keys, "granted")
    _events(api, keys, "cli", utcnow())
    _consent(api, keys, "withdrawn")
    settings = runtime.settings
    assert settings.master_key is not None
    env = {
        "PROFILESTORE_DATABASE_URL": settings.resolved_database_url,
        "PROFILESTORE_KEYSTORE_URL": settings.resolved_keystore_url,
        "PROFILESTORE_MASTER_KEY": settings.master_key.get_secret_value(),
    }
    result = CliRunner().invoke(cli, ["purge"], env=env)
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output.strip().splitlines()[-1])
    assert counts["events_deleted"] == {"withdrawn_or_expired": 3}
