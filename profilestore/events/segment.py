"""The Segment Tracking API on top of our own rules: a site already sending to Segment or
RudderStack points its SDK at us and changes nothing else.

- ``track``/``page``/``screen`` become events (``Product Viewed`` → ``product_viewed``,
  page → ``page_viewed``, screen → ``screen_viewed``), gated like native ones;
- ``identify`` links ``userId``/``anonymousId`` and identifier traits (email, phone…), and turns
  mapped traits into declared preferences;
- ``alias`` joins ``previousId`` and ``userId`` (merging two subjects if both exist);
- ``context.consent.categoryPreferences`` records consent (source ``segment``) where it changes
  the state, mapped category → purposes by configuration; ``Sec-GPC: 1`` is honoured;
- ``group`` is accepted and ignored (no person-level data);
- a message's time is corrected for its sender's clock skew when it says when it was sent
  (``sentAt``, on the message or the batch), as Segment does.

A batch is validated whole before anything is written; consent and identity messages apply
before the batch's events, so an event rides on the consent sent with it.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.consent.schemas import Evidence
from profilestore.crypto.service import Vault
from profilestore.events import intake
from profilestore.events import service as events
from profilestore.events.segment_schemas import SegmentContext, SegmentMessage
from profilestore.identity import service as identity
from profilestore.identity.normalise import normalise
from profilestore.identity.schemas import Identifiers
from profilestore.kit.errors import InvalidInput
from profilestore.preferences import service as preferences
from profilestore.preferences.schemas import PreferenceItem, PreferencesIn
from profilestore.purposes import service as purposes

EVENT_TYPES = {"page": "page_viewed", "screen": "screen_viewed"}
_NOT_WORD = re.compile(r"[^a-z0-9]+")


FIELD_PREFIX = "batch.{index}."


def event_type(message: SegmentMessage, index: int) -> str:
    if message.type in EVENT_TYPES:
        return EVENT_TYPES[message.type]
    if not message.event or not message.event.strip():
        raise InvalidInput("a track call needs an event name", field=f"batch.{index}.event")
    name = _NOT_WORD.sub("_", message.event.strip().lower()).strip("_")
    if not name:
        raise InvalidInput("the event name has no letters or digits", field=f"batch.{index}.event")
    return (name if name[0].isalpha() else f"e_{name}")[:100]


def identifiers_of(message: SegmentMessage, settings: Settings) -> dict[str, str]:
    found: dict[str, str] = {}
    if message.userId:
        found["user_id"] = message.userId
    if message.anonymousId:
        found["anonymous_id"] = message.anonymousId
    if message.type == "identify":
        traits = traits_of(message)
        for trait, kind in settings.segment.identifier_traits.items():
            value = traits.get(trait)
            if isinstance(value, str) and value.strip():
                found[kind] = value
    return found


def traits_of(message: SegmentMessage) -> dict[str, Any]:
    """Identify traits: RudderStack's SDK sends them in ``context.traits``, Segment's at the top."""
    from_context = getattr(message.context, "traits", None) if message.context else None
    return {**(from_context if isinstance(from_context, dict) else {}), **(message.traits or {})}


def _when(message: SegmentMessage, now: datetime, index: int) -> datetime:
    """When the message happened, on our clock, by Segment's rule: the time its sender stamped,
    moved by how far the sender's clock was off when it sent the message (``timestamp =
    receivedAt - (sentAt - originalTimestamp)``). A phone whose clock runs ten minutes ahead
    would otherwise send events from the future, which are refused. A message without ``sentAt``
    keeps its stamp (an import of past events); one without a stamp happened now."""
    stamped = message.timestamp or message.originalTimestamp
    if stamped is None:
        return now
    if message.sentAt is None:
        return stamped
    try:
        return stamped + (now - message.sentAt)
    except OverflowError:
        # A sentAt centuries off: no clock is that wrong, and the corrected time is off the calendar.
        raise InvalidInput("sentAt is too far from now to correct the time by", field=f"batch.{index}.sentAt") from None


def _evidence(context: SegmentContext | None) -> Evidence | None:
    if context is None:
        return None
    ip = context.ip
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            ip = None  # an SDK's context is best effort: a bad IP is left out, not refused
    return Evidence(user_agent=context.userAgent, ip=ip, locale=context.locale)


def consent_decisions(context: SegmentContext | None, settings: Settings) -> list[tuple[str, str]]:
    """Mapped (purpose, status) pairs of ``context.consent.categoryPreferences``."""
    prefs = ((context.consent or {}).get("categoryPreferences") if context else None) or {}
    if not isinstance(prefs, dict):
        return []
    decisions: dict[str, str] = {}
    for category, allowed in prefs.items():
        if not isinstance(allowed, bool):
            continue
        for purpose in settings.segment.consent_categories.get(category, []):
            decisions[purpose] = "granted" if allowed else "withdrawn"
    return sorted(decisions.items())


def _trait_preferences(message: SegmentMessage, settings: Settings) -> list[PreferenceItem]:
    items = []
    for trait, target in settings.segment.trait_map.items():
        value = traits_of(message).get(trait)
        if value is None:
            continue
        try:
            items.append(PreferenceItem(key=target.key, value=value, category=target.category))
        except ValidationError:
            continue  # a trait of a shape we can't keep as a preference (an object, say) is skipped
    return items


@dataclass
class _Plan:
    """One validated batch: what to apply before the events, and the events."""

    people: list[tuple[SegmentMessage, dict[str, str], datetime]]  # with when each happened
    events: events.PreparedBatch


def _validate(
    session: Session, vault: Vault, settings: Settings, batch: Sequence[SegmentMessage], now: datetime
) -> _Plan:
    people, incoming = [], []
    for index, message in enumerate(batch):
        ids = identifiers_of(message, settings)
        if message.type != "alias" and not ids:
            raise InvalidInput("a message needs a userId or an anonymousId", field=f"batch.{index}.userId")
        for kind, value in ids.items():
            try:
                normalise(kind, value, default_region=settings.default_phone_region)
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field=f"batch.{index}.{exc.field}") from exc
        if message.type == "alias" and not (message.userId and message.previousId):
            raise InvalidInput("an alias call needs userId and previousId", field=f"batch.{index}.previousId")
        when = _when(message, now, index)
        if message.type in ("identify", "alias") or consent_decisions(message.context, settings):
            people.append((message, ids, when))
        if message.type in ("track", "page", "screen"):
            properties = dict(message.properties or {})
            if message.type in EVENT_TYPES and message.name:
                properties.setdefault("name", message.name)
            kind = event_type(message, index)
            incoming.append(
                events.IncomingEvent(
                    identifiers=ids,
                    type=kind,
                    properties=properties,
                    occurred_at=when,
                    message_id=message.messageId or f"generated-{uuid.uuid4()}",
                    category=events.default_category(settings, kind),
                )
            )
    prepared = intake.prepare(vault, settings, incoming, now=now, field_prefix=FIELD_PREFIX)
    events.check_categories(session, prepared, field_prefix=FIELD_PREFIX)
    purposes.require_categories(
        session, {t.category for t in settings.segment.trait_map.values()}, field="segment.trait_map"
    )
    return _Plan(people, prepared)


def process(
    session: Session,
    vault: Vault,
    settings: Settings,
    batch: Sequence[SegmentMessage],
    *,
    client_id: str,
    gpc: bool,
    now: datetime,
) -> events.IngestReport:
    """Apply one Segment batch; returns the event counts (accepted, duplicates, dropped by reason)."""
    plan = _validate(session, vault, settings, batch, now)
    for message, ids, when in plan.people:
        # A consent or identify stamped ahead of our clock counts as now.
        _apply_person(session, vault, settings, message, ids, min(when, now), client_id=client_id, gpc=gpc, now=now)
    if gpc:
        known = identity.known_by_indexes(session, plan.events.indexes)
        for subject_id in sorted({k.subject_id for k in known if k}):
            _record_consent(session, vault, settings, subject_id, [], now, None, client_id, gpc=True)
    return intake.ingest(session, vault, settings, plan.events, client_id=client_id, now=now, field_prefix=FIELD_PREFIX)


def _apply_person(
    session: Session,
    vault: Vault,
    settings: Settings,
    message: SegmentMessage,
    ids: dict[str, str],
    when: datetime,
    *,
    client_id: str,
    gpc: bool,
    now: datetime,
) -> None:
    if message.type == "alias":
        ids = {**ids, **_previous(session, vault, settings, message.previousId or "")}
    decisions = consent_decisions(message.context, settings)
    # Consent creates the person (as a consent post does); identify and alias only link people
    # who already gave some consent.
    resolution = identity.resolve(session, vault, settings, ids, client_id=client_id, create=bool(decisions))
    if resolution is None:
        return
    if decisions or gpc:
        _record_consent(
            session, vault, settings, resolution.subject_id, decisions, when, message.context, client_id, gpc=gpc
        )
    items = _trait_preferences(message, settings) if message.type == "identify" else []
    if items:
        body = PreferencesIn(
            identifiers=Identifiers(**ids), preferences=items, source=settings.segment.source, declared_at=when
        )
        prepared = preferences.prepare(session, settings, body, now=now)
        found = identity.live_status(session, resolution.subject_id)
        if found is not None:
            allowed = consent.collectable_categories(session, resolution.subject_id)
            kept = preferences.admitted(prepared, found[1], allowed)
            preferences.store(session, resolution.cipher(vault), prepared, kept, client_id=client_id)


def _previous(session: Session, vault: Vault, settings: Settings, previous: str) -> dict[str, str]:
    """``previousId`` is whatever id the person had before: an anonymous id or a user id."""
    for kind in ("anonymous_id", "user_id"):
        if identity.find(session, vault, settings, {kind: previous}):
            return {kind: previous}
    return {"anonymous_id": previous}


def _record_consent(
    session: Session,
    vault: Vault,
    settings: Settings,
    subject_id: str,
    decisions: list[tuple[str, str]],
    when: datetime,
    context: SegmentContext | None,
    client_id: str,
    *,
    gpc: bool,
) -> None:
    lineage = identity.lineage(session, subject_id)
    collected = consent.Collected(when, settings.segment.source, None, _evidence(context))
    consent.record_changes(
        session,
        settings,
        vault.cipher(subject_id, lineage),
        decisions,
        collected,
        lineage=lineage,
        client_id=client_id,
        gpc=gpc,
    )
