"""Pure rules of consent: deriving the current state of one purpose from its decisions, and the
effective status of a purpose through the hierarchy. No database, so they are easy to check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from profilestore.purposes.rules import ancestors

GRANTED, DENIED, WITHDRAWN = "granted", "denied", "withdrawn"


@dataclass(frozen=True)
class Decision:
    record_id: str
    seq: int
    status: str
    collected_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class State:
    status: str
    record_id: str
    collected_at: datetime
    expires_at: datetime | None
    grant_started_at: datetime | None
    grant_epoch: datetime | None = None  # see ConsentState: server time the grant was first held

    def granted_at(self, now: datetime) -> bool:
        return self.status == GRANTED and (self.expires_at is None or self.expires_at > now)


def derive(decisions: Sequence[Decision]) -> State | None:
    """The state after ``decisions``, which resolve by ``collected_at`` (then by arrival).

    A grant continues the grant in force when it arrives before that grant expired; after a
    denial, a withdrawal or an expiry, a grant starts a new one (and nothing collected under the
    old one may be used).
    """
    ordered = sorted(decisions, key=lambda d: (d.collected_at, d.seq))
    if not ordered:
        return None
    started: datetime | None = None
    previous: Decision | None = None
    for decision in ordered:
        if decision.status != GRANTED:
            started = None
        elif (
            started is None
            or previous is None
            or previous.status != GRANTED
            or (previous.expires_at is not None and previous.expires_at <= decision.collected_at)
        ):
            started = decision.collected_at
        previous = decision
    last = ordered[-1]
    return State(last.status, last.record_id, last.collected_at, last.expires_at, started)


@dataclass(frozen=True)
class Effective:
    """Whether a purpose may be used now, decided by ``decided_by`` (the purpose itself or the most
    specific purpose above it that has a record)."""

    in_force: bool
    status: str  # granted | denied | withdrawn | expired | none | not_required
    decided_by: str | None
    grant_started_at: datetime | None
    grant_epoch: datetime | None = None


def effective(purpose: str, needs_consent: bool, states: Mapping[str, State], now: datetime) -> Effective:
    if not needs_consent:
        return Effective(True, "not_required", None, None)
    # The most specific decision decides. A lapsed grant is no decision: the person refused
    # nothing, so a grant above it in force still covers the purpose (a withdrawal or a denial of
    # the purpose itself does beat its parent's grant).
    lapsed = None
    for candidate in ancestors(purpose):
        state = states.get(candidate)
        if state is None:
            continue
        if state.granted_at(now):
            return Effective(True, GRANTED, candidate, state.grant_started_at, state.grant_epoch)
        if state.status == GRANTED:
            lapsed = lapsed or candidate
            continue
        return Effective(False, state.status, candidate, None)
    if lapsed is not None:
        return Effective(False, "expired", lapsed, None)
    return Effective(False, "none", None, None)
