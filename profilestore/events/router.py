"""Native behavioural event ingest."""

from __future__ import annotations

from fastapi import APIRouter

from profilestore.auth.dependencies import Collector
from profilestore.deps import ReadSession, SettingsDep, VaultDep, WriteSession
from profilestore.events import intake, service
from profilestore.events.schemas import EventsAccepted, EventsIn
from profilestore.kit.time import utcnow

router = APIRouter(tags=["events"])


@router.post("/v1/events")
def post_events(
    body: EventsIn,
    session: WriteSession,
    snapshot: ReadSession,
    vault: VaultDep,
    settings: SettingsDep,
    caller: Collector,
) -> EventsAccepted:
    """Ingest a batch (at most 1,000 events, 32 KB of properties each). Events whose category no
    purpose in force may use are dropped and counted by reason; a repeated ``message_id`` from the
    same client is stored once and counted as a duplicate."""
    now = utcnow()
    incoming = [
        service.IncomingEvent(
            identifiers=e.identifiers.present(),
            type=e.type,
            properties=e.properties,
            occurred_at=e.occurred_at,
            message_id=e.message_id,
            category=e.category or service.default_category(settings, e.type),
        )
        for e in body.events
    ]
    # Worked out on a read snapshot, before the write transaction's first statement: outside the
    # writer's turn (see db.py). The write transaction checks the plan still holds, then writes it.
    batch = intake.prepare(vault, settings, incoming, now=now)
    planned = intake.plan(snapshot, vault, settings, batch, client_id=caller.client_id, now=now)
    report = intake.ingest(session, vault, settings, batch, client_id=caller.client_id, now=now, planned=planned)
    return EventsAccepted(accepted=report.accepted, duplicates=report.duplicates, dropped=dict(report.dropped))
