"""Purpose-bound profile views: one purpose, exactly the data it may use, ranked.

Rules (DESIGN.md, "Purpose before data"): the client must be allowed to read for the purpose; the
subject's effective consent for it (or a legal basis that needs none) must be in force; only data
whose category is in the purpose's policy, and only data collected during the grant now in force.
An unknown subject and one who may not be personalised get the same default view; the reason is
logged (and shown to privacy clients that ask to ``explain``), never returned to readers.
Everything is read from the database on every call: a withdrawal shows on the very next read,
whichever process serves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from profilestore.audit.service import AccessRecorder
from profilestore.auth.schemas import Role
from profilestore.auth.service import Caller
from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.consent.service import EPOCH_ZERO
from profilestore.crypto.service import Vault
from profilestore.events import service as events
from profilestore.identity import service as identity
from profilestore.identity.schemas import SubjectStatus
from profilestore.kit.errors import Forbidden, InvalidInput
from profilestore.kit.sql import prefetch, reads_ahead
from profilestore.preferences import service as preferences
from profilestore.purposes import service as purposes
from profilestore.purposes.rules import ancestors
from profilestore.signals import evidence as signal_evidence
from profilestore.signals import service as signals
from profilestore.views import ranking
from profilestore.views.schemas import (
    ConsentSummary,
    Explanation,
    LeftOut,
    RecentEvent,
    ViewOut,
)

SECTIONS = ("recent_events",)


@dataclass(frozen=True)
class ViewQuery:
    purpose: str
    include: frozenset[str]
    explain: bool
    recent_limit: int


def query(settings: Settings, purpose: str, include: Sequence[str], explain: bool, limit: int | None) -> ViewQuery:
    unknown = sorted(set(include) - set(SECTIONS))
    if unknown:
        raise InvalidInput(f"unknown section '{unknown[0]}'; known: {', '.join(SECTIONS)}", field="include")
    limit = settings.views.recent_events_default if limit is None else limit
    if not 1 <= limit <= settings.views.recent_events_max:
        raise InvalidInput(f"limit must be between 1 and {settings.views.recent_events_max}", field="limit")
    return ViewQuery(purpose, frozenset(include), explain, limit)


def subject_for(session: Session, vault: Vault, settings: Settings, identifiers: dict[str, str]) -> str | None:
    """The subject a reader's identifiers name, or None. Only identifiers that are all known and
    all name the same person name anyone: otherwise a reader holding one person's cookie could
    test whether any email is in the store by the answer it gets (and no error may tell it that
    two people exist)."""
    found = identity.lookup_known(session, vault, settings, [identifiers], field_prefix="")[0]
    return found.subject_id if found is not None and found.complete else None


def authorise(caller: Caller, q: ViewQuery) -> None:
    """Readers read for their purposes (and the narrower purposes beneath them); explaining what
    was left out is for privacy and admin clients only."""
    if q.explain and caller.role not in (Role.privacy, Role.admin):
        raise Forbidden("explain is for privacy and admin clients")
    if caller.role is Role.reader and not set(ancestors(q.purpose)) & caller.purposes:
        raise Forbidden(f"this client may not read for purpose '{q.purpose}'")


def _explanation(
    reason: str, signals_left: Mapping[tuple[str, str, str], int], preferences_left: Mapping[str, int]
) -> Explanation:
    """What ``explain`` shows: why the view is (not) personalised, and what it left out, by reason."""
    left_out = [
        LeftOut(section="signals", dimension=d, category=c, reason=why, count=n)
        for (d, c, why), n in sorted(signals_left.items())
    ]
    left_out += [
        LeftOut(section="preferences", dimension=None, category=None, reason=why, count=n)
        for why, n in sorted(preferences_left.items())
        if n
    ]
    return Explanation(reason=reason, left_out=left_out)


def _default(
    session: Session, settings: Settings, q: ViewQuery, reason: str, subject_id: str | None
) -> tuple[ViewOut, str | None, str]:
    """The default view, the subject it stands for and why. Explained, it lists everything the
    subject holds as left out for that reason (a reader's answer says nothing of it)."""
    explanation = None
    if q.explain:  # a default view uses nothing the subject holds: all of it is left out
        signals_left: Mapping[tuple[str, str, str], int] = {}
        preferences_left: Mapping[str, int] = {}
        if subject_id is not None:
            signals_left = signals.left_out(session, subject_id, None, reason)
            preferences_left = {reason: preferences.held(session, subject_id)}
        explanation = _explanation(reason, signals_left, preferences_left)
    view = ViewOut(
        purpose=q.purpose,
        subject_id=None,
        personalised=False,
        signals={},
        preferences=[],
        consent=ConsentSummary(in_force=False, basis=None, granted_since=None),
        defaults=settings.views.defaults.get(q.purpose, {}),
        recent_events=[] if "recent_events" in q.include else None,
        explain=explanation,
    )
    return view, subject_id, reason


def build(
    session: Session,
    vault: Vault,
    settings: Settings,
    caller: Caller,
    q: ViewQuery,
    subject_ref: str | None,
    recorder: AccessRecorder,
    now: datetime,
) -> ViewOut:
    """The view of ``subject_ref`` (a subject id, or None for identifiers that matched nobody)."""
    # What the view reads first, none of it waiting for another's answer, in one round trip
    # (PostgreSQL); then its signals, which need the rules and the consent.
    if reads_ahead(session):
        ahead = [purposes.rules_query([q.purpose])]
        if subject_ref:
            ahead += [
                identity.live_status_query(subject_ref),
                consent.states_query(subject_ref),
                preferences.current_query(subject_ref),
            ]
        prefetch(session, ahead)
    rules = purposes.rules(session, [q.purpose])
    if q.purpose not in rules:
        raise InvalidInput(f"unknown purpose '{q.purpose}'", field="purpose")
    authorise(caller, q)
    rule = rules[q.purpose]

    view, subject_id, reason = _view(session, vault, settings, q, rule, subject_ref, now)
    sections = ["signals", "preferences", *q.include] if view.personalised else ["default"]
    if q.explain:  # it tells what else the person has: a read of its own kind
        sections.append("explain")
    sections.sort()
    # The reason a view is (not) personalised is logged on every read; readers never see it.
    recorder.record(
        client_id=caller.client_id,
        action="view.read",
        subject_id=subject_id,
        purpose=q.purpose,
        detail={"sections": sections, "personalised": view.personalised, "reason": reason},
    )
    return view


def _view(
    session: Session,
    vault: Vault,
    settings: Settings,
    q: ViewQuery,
    rule: purposes.PurposeRule,
    subject_ref: str | None,
    now: datetime,
) -> tuple[ViewOut, str | None, str]:
    """The view, the subject it is of (None if unknown), and why it is (not) personalised."""
    found = identity.live_status(session, subject_ref) if subject_ref else None
    if found is None:
        return _default(session, settings, q, "unknown_subject", None)
    subject_id, status = found
    if status == SubjectStatus.restricted:
        return _default(session, settings, q, "restricted", subject_id)
    verdict = consent.effective_status(session, subject_id, rule, now)
    if not verdict.in_force:
        return _default(session, settings, q, f"consent_{verdict.status}", subject_id)

    permitted = signals.Permitted(rule.categories, verdict.grant_epoch or EPOCH_ZERO)
    cipher = vault.cipher(subject_id)
    prefs, prefs_left = preferences.permitted(session, cipher, rule.categories, permitted.min_epoch)
    declared = _declarations(prefs, settings)
    limit = settings.views.max_values_per_dimension
    # Declared values are fetched whatever their behavioural rank: evidence for them makes them "both".
    also = {signal_evidence.value_index(vault, d.dimension, d.value) for d in declared}
    reading = signals.read(session, cipher, permitted, settings.signals, now, limit=limit, also=also)
    ranked = ranking.rank(
        reading.values,
        declared,
        declared_weight=settings.views.declared_weight,
        contradiction_min_evidence=settings.views.contradiction_min_evidence,
        limit=limit,
        volumes=reading.volumes,
    )
    recent = None
    if "recent_events" in q.include:
        recent = [RecentEvent(**e) for e in events.recent(session, cipher, permitted, q.recent_limit)]
    explanation = None
    if q.explain:
        explanation = _explanation("personalised", signals.left_out(session, subject_id, permitted), prefs_left)
    view = ViewOut(
        purpose=q.purpose,
        subject_id=subject_id,
        personalised=True,
        signals={dimension: values for dimension, values in ranked.items() if values},
        preferences=prefs,
        consent=ConsentSummary(
            in_force=True,
            basis="granted" if rule.needs_consent else rule.legal_basis,
            granted_since=verdict.grant_started_at,
        ),
        defaults=settings.views.defaults.get(q.purpose, {}),
        recent_events=recent,
        explain=explanation,
    )
    return view, subject_id, "personalised"


def _declarations(prefs: Sequence[preferences.PreferenceOut], settings: Settings) -> list[ranking.Declaration]:
    """Declared preferences that speak to a dimension, as values comparable with behaviour."""
    found = []
    for pref in prefs:
        dimension = settings.signals.preference_dimensions.get(pref.key)
        if dimension is None:
            continue
        values = pref.value if isinstance(pref.value, list) else [pref.value]
        for raw in values:
            value = signal_evidence.normalise_value(raw)
            if value:
                found.append(ranking.Declaration(dimension, value, pref.declared_at))
    return found
