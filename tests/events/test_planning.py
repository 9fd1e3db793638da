"""A batch is planned on a read snapshot (outside the writer's turn) and written by the write
transaction only if the identities and consent the plan rests on are still those in force; if
anything changed in between, the write transaction works the batch out again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from profilestore.events import intake
from profilestore.events import service as events
from profilestore.kit.time import utcnow
from profilestore.runtime import Runtime
from tests.conftest import Keys
from tests.events.support import event, grant, ingest, restrict, stored_events, stored_signals

ADA = {"email": "ada@example.com"}


def _batch(runtime: Runtime, identifiers: dict[str, str], count: int = 3) -> events.PreparedBatch:
    incoming = [
        events.IncomingEvent(
            identifiers=identifiers,
            type="product_viewed",
            properties={"category": "Shoes"},
            occurred_at=datetime.now(UTC),
            message_id=f"m-{i}",
            category="user.behavior.browsing_history",
        )
        for i in range(count)
    ]
    return intake.prepare(runtime.vault, runtime.settings, incoming, now=utcnow())


def _plan(runtime: Runtime, client_id: str, batch: events.PreparedBatch) -> intake.Plan:
    with runtime.db.read_session() as snapshot:
        return intake.plan(snapshot, runtime.vault, runtime.settings, batch, client_id=client_id, now=utcnow())


def _ingest(runtime: Runtime, client_id: str, batch: events.PreparedBatch, planned: intake.Plan) -> events.IngestReport:
    with runtime.db.transaction() as session:
        return intake.ingest(
            session, runtime.vault, runtime.settings, batch, client_id=client_id, now=utcnow(), planned=planned
        )


def _collector_id(api: TestClient, keys: Keys) -> str:
    clients = api.get("/v1/clients", headers=keys.header("admin")).json()
    return next(c["client_id"] for c in clients if c["role"] == "collector")


def test_an_unchanged_plan_is_written_as_planned(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    client_id = _collector_id(api, keys)
    batch = _batch(runtime, ADA)
    planned = _plan(runtime, client_id, batch)
    assert planned.staged is not None

    report = _ingest(runtime, client_id, batch, planned)

    assert report.accepted == 3
    assert {e.event_id for e in stored_events(runtime)} == set(planned.staged.event_ids.values())


def test_a_withdrawal_between_plan_and_write_drops_the_planned_events(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA)
    client_id = _collector_id(api, keys)
    batch = _batch(runtime, ADA)
    planned = _plan(runtime, client_id, batch)
    assert planned.staged is not None and len(planned.staged.event_params) == 3

    grant(api, keys, ADA, {"personalize": "withdrawn"})
    report = _ingest(runtime, client_id, batch, planned)

    assert (report.accepted, dict(report.dropped)) == (0, {"no_consent": 3})
    assert stored_events(runtime) == [] and stored_signals(runtime) == []


def test_a_grant_between_plan_and_write_admits_what_the_plan_dropped(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA, {"personalize": "denied"})
    client_id = _collector_id(api, keys)
    batch = _batch(runtime, ADA)
    planned = _plan(runtime, client_id, batch)
    assert planned.staged is not None and planned.staged.event_ids == {}

    grant(api, keys, ADA)
    report = _ingest(runtime, client_id, batch, planned)

    assert report.accepted == 3
    assert len(stored_events(runtime)) == 3


def test_a_repeat_stored_between_plan_and_write_is_a_duplicate_and_not_counted_twice(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA)
    client_id = _collector_id(api, keys)
    batch = _batch(runtime, ADA)
    first, second = _plan(runtime, client_id, batch), _plan(runtime, client_id, batch)

    assert _ingest(runtime, client_id, batch, first).accepted == 3
    report = _ingest(runtime, client_id, batch, second)

    assert (report.accepted, report.duplicates) == (0, 3)
    assert len(stored_events(runtime)) == 3
    assert [s.evidence for s in stored_signals(runtime)] == [3]


def test_a_partly_repeated_batch_counts_only_its_new_events_in_signals(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA)
    client_id = _collector_id(api, keys)
    _ingest(runtime, client_id, first := _batch(runtime, ADA, count=3), _plan(runtime, client_id, first))
    again = _batch(runtime, ADA, count=5)  # m-0 .. m-4: three repeats, two new

    report = _ingest(runtime, client_id, again, _plan(runtime, client_id, again))

    assert (report.accepted, report.duplicates) == (2, 3)
    assert len(stored_events(runtime)) == 5
    assert [s.evidence for s in stored_signals(runtime)] == [5]


def test_a_restriction_between_plan_and_write_drops_the_planned_events(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject_id = grant(api, keys, ADA)
    client_id = _collector_id(api, keys)
    batch = _batch(runtime, ADA)
    planned = _plan(runtime, client_id, batch)
    assert planned.staged is not None

    restrict(runtime, subject_id)
    report = _ingest(runtime, client_id, batch, planned)

    assert (report.accepted, dict(report.dropped)) == (0, {"restricted": 3})
    assert stored_events(runtime) == []


# -- the gate generation (SQLite): what tells the write transaction that nothing changed ----------


def _generation(runtime: Runtime) -> int | None:
    with runtime.db.read_session() as session:
        return intake.gate_generation(session)


def test_every_table_the_gate_reads_moves_the_generation_on_sqlite(runtime: Runtime) -> None:
    with runtime.db.read_session() as session:
        if runtime.db.is_sqlite:
            triggers = {
                (table, name)
                for name, table in session.execute(
                    text("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
                )
            }
            for table in intake.GATED_BY:
                for change in ("insert", "update", "delete"):
                    assert (table, f"gate_{table}_{change}") in triggers
        else:
            assert intake.gate_generation(session) is None  # PostgreSQL looks the batch up again


def test_consent_and_identity_writes_move_the_generation_and_event_writes_do_not(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    if not runtime.db.is_sqlite:
        pytest.skip("PostgreSQL keeps no gate generation: it looks every batch up again")
    before = _generation(runtime)
    subject_id = grant(api, keys, ADA)
    granted = _generation(runtime)
    assert granted is not None and before is not None and granted > before

    ingest(api, keys, [event(ADA, message_id=f"e-{i}") for i in range(3)])
    assert _generation(runtime) == granted  # batches planned meanwhile stay valid

    restrict(runtime, subject_id)
    assert (_generation(runtime) or 0) > granted
