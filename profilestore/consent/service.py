"""The consent ledger: append-only records chained by hash, the current state derived from them,
and the question every other domain asks — which purposes are in force for this subject now?

Records never move or change. A subject's history is the records of its whole lineage (itself and
the subjects merged into it); its state is derived per purpose from that history, so late records
and merges resolve by ``collected_at`` alone.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from profilestore.audit import service as audit
from profilestore.config import Settings
from profilestore.consent.models import ConsentRecord, ConsentState
from profilestore.consent.rules import GRANTED, Decision, Effective, State, derive, effective
from profilestore.consent.schemas import (
    ConsentIn,
    ConsentReceipt,
    ConsentsOut,
    ConsentStatus,
    Evidence,
    HistoryRecord,
    NoticeRef,
    RecordOut,
    StateOut,
)
from profilestore.crypto.service import SubjectCipher
from profilestore.kit.chain import ChainWriter, Verification, verify_chain
from profilestore.kit.errors import InvalidInput
from profilestore.kit.ids import new_id
from profilestore.kit.sql import Query, rows
from profilestore.kit.time import utcnow
from profilestore.purposes import service as purposes
from profilestore.purposes.rules import ancestors
from profilestore.purposes.service import PurposeRule

CHAIN = "consent"
TABLE = "consent_records"
GPC_SOURCE = "gpc"


@dataclass(frozen=True)
class PreparedConsent:
    """A consent submission that passed every check; recording it cannot fail on its content."""

    body: ConsentIn
    rules: dict[str, PurposeRule]
    gpc_purposes: tuple[str, ...]


def prepare(session: Session, settings: Settings, body: ConsentIn, *, gpc: bool, now: datetime) -> PreparedConsent:
    """Check a submission against purposes, the notice and the clock, before anything is written."""
    keys = [item.purpose for item in body.consents]
    purposes.require_purposes(session, keys, field="consents.{index}.purpose")
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if key in seen:
            raise InvalidInput(f"purpose '{key}' is listed twice", field=f"consents.{index}.purpose")
        seen.add(key)
    named = purposes.notice_covering(session, body.notice.key, body.notice.version)
    for index, key in enumerate(keys):
        if not purposes.notice_covers(named, key):
            raise InvalidInput(
                f"notice '{body.notice.key}' version {body.notice.version} does not cover purpose '{key}'",
                field=f"consents.{index}.purpose",
            )
    if body.collected_at > now + timedelta(seconds=settings.clock_skew_seconds):
        raise InvalidInput("collected_at is in the future", field="collected_at")
    gpc_purposes: tuple[str, ...] = ()
    if gpc:
        gpc_purposes = tuple(sorted(purposes.rules(session, settings.gpc_purposes)))
    return PreparedConsent(body, purposes.rules(session, [*keys, *gpc_purposes]), gpc_purposes)


def _truncate_ip(text: str | None) -> str | None:
    """Keep the network, not the host: /24 of an IPv4 address, /48 of an IPv6 one."""
    if text is None:
        return None
    ip = ipaddress.ip_address(text)
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _evidence_bytes(evidence: Evidence | None) -> bytes | None:
    if evidence is None:
        return None
    payload = {"user_agent": evidence.user_agent, "ip": _truncate_ip(evidence.ip), "locale": evidence.locale}
    return json.dumps(payload, sort_keys=True).encode()


def _content(record: ConsentRecord) -> dict[str, object]:
    """What a record's hash covers: everything but the chain fields themselves."""
    return {
        "record_id": record.record_id,
        "subject_id": record.subject_id,
        "receipt_id": record.receipt_id,
        "purpose": record.purpose,
        "status": record.status,
        "notice_key": record.notice_key,
        "notice_version": record.notice_version,
        "source": record.source,
        "collected_at": record.collected_at,
        "recorded_at": record.recorded_at,
        "expires_at": record.expires_at,
        "client_id": record.client_id,
        "evidence_ct": record.evidence_ct,
    }


@dataclass(frozen=True)
class Collected:
    """The circumstances of a set of decisions: when, where from, under which notice, with what."""

    collected_at: datetime
    source: str
    notice: NoticeRef | None
    evidence: Evidence | None


def record(
    session: Session,
    cipher: SubjectCipher,
    prepared: PreparedConsent,
    *,
    lineage: Sequence[str],
    client_id: str,
    merged: Sequence[str] = (),
) -> ConsentReceipt:
    """Append the submission's decisions (and any GPC withdrawals) to the ledger; update state.
    ``merged``: the subjects that resolving its identifiers merged into this one (audited)."""
    body = prepared.body
    decisions = [(c.purpose, c.status.value, body.source) for c in body.consents]
    decisions += _gpc_decisions(session, cipher.subject_id, prepared.gpc_purposes, decisions)
    collected = Collected(body.collected_at, body.source, body.notice, body.evidence)
    return _append(session, cipher, lineage, decisions, collected, prepared.rules, client_id, merged)


def record_changes(
    session: Session,
    settings: Settings,
    cipher: SubjectCipher,
    decisions: Sequence[tuple[str, str]],
    collected: Collected,
    *,
    lineage: Sequence[str],
    client_id: str,
    gpc: bool = False,
) -> ConsentReceipt | None:
    """Record signalled decisions (from a consent manager riding along with events, or the GPC
    header) only where they change the purpose's current state: the same banner state sent with
    every event must not grow the ledger. Unknown purposes are ignored (a mapping points at them).
    Returns None when nothing changed."""
    rules = purposes.rules(session, [p for p, _ in decisions] + (list(settings.gpc_purposes) if gpc else []))
    current = _states(session, cipher.subject_id)
    changed = [
        (p, s, collected.source)
        for p, s in decisions
        if p in rules and _changes(current.get(p), s, collected.collected_at)
    ]
    if gpc:
        changed += _gpc_decisions(
            session, cipher.subject_id, tuple(k for k in settings.gpc_purposes if k in rules), changed
        )
    if not changed:
        return None
    return _append(session, cipher, lineage, changed, collected, rules, client_id)


def _changes(state: State | None, status: str, at: datetime) -> bool:
    """Whether a signalled decision changes a purpose's state: a grant renews one that has expired
    (a banner still saying yes after the validity ran out is a new grant, not a repeat)."""
    if state is None:
        return True
    if status == GRANTED:
        return not state.granted_at(at)
    return state.status != status


def _gpc_decisions(
    session: Session, subject_id: str, gpc_purposes: Sequence[str], decisions: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """Withdrawals a ``Sec-GPC: 1`` signal adds: for each sale/sharing or targeted-advertising
    purpose, unless it is already out of force (and not being granted in this same request)."""
    if not gpc_purposes:
        return []
    current = _states(session, subject_id)
    added = []
    for key in gpc_purposes:
        state = current.get(key)
        already_out = state is not None and state.status != GRANTED and not _granted_now(decisions, key)
        if not already_out:
            added.append((key, ConsentStatus.withdrawn.value, GPC_SOURCE))
    return added


def _append(
    session: Session,
    cipher: SubjectCipher,
    lineage: Sequence[str],
    decisions: Sequence[tuple[str, str, str]],
    collected: Collected,
    rules: dict[str, PurposeRule],
    client_id: str,
    merged: Sequence[str] = (),
) -> ConsentReceipt:
    """Every consent change goes through here, from a form or signalled with events: chained in
    the ledger, folded into the state, and written to the access log."""
    subject_id = cipher.subject_id
    now = utcnow()
    receipt_id = new_id("rcpt")
    evidence = _evidence_bytes(collected.evidence)
    chain = ChainWriter(session, CHAIN)
    written: list[ConsentRecord] = []
    for purpose, status, source in decisions:
        record_id = new_id("rec")
        valid_for = timedelta(days=rules[purpose].consent_valid_days)
        row = ConsentRecord(
            subject_id=subject_id,
            record_id=record_id,
            receipt_id=receipt_id,
            purpose=purpose,
            status=status,
            notice_key=collected.notice.key if collected.notice else None,
            notice_version=collected.notice.version if collected.notice else None,
            source=source,
            collected_at=collected.collected_at,
            recorded_at=now,
            expires_at=collected.collected_at + valid_for if status == GRANTED else None,
            client_id=client_id,
            evidence_ct=cipher.encrypt(TABLE, "evidence", record_id, evidence) if evidence else None,
        )
        written.append(row)
    for row, link in zip(written, chain.extend(_content(row) for row in written), strict=True):
        row.seq, row.prev_hash, row.hash = link.seq, link.prev_hash, link.hash
        session.add(row)
    session.flush()
    for purpose in {p for p, _, _ in decisions}:
        _recompute(session, subject_id, lineage, purpose)
    audit.log(
        session,
        client_id=client_id,
        action="consent.record",
        subject_id=subject_id,
        detail={"receipt_id": receipt_id, "records": len(written), "merged": list(merged)},
    )
    return ConsentReceipt(
        receipt_id=receipt_id,
        subject_id=subject_id,
        recorded_at=now,
        records=[
            RecordOut(
                record_id=r.record_id,
                purpose=r.purpose,
                status=ConsentStatus(r.status),
                collected_at=r.collected_at,
                expires_at=r.expires_at,
                source=r.source,
                hash=r.hash,
            )
            for r in written
        ],
    )


def _granted_now(decisions: Sequence[tuple[str, str, str]], purpose: str) -> bool:
    return any(p == purpose and s == GRANTED for p, s, _ in decisions)


def _recompute(
    session: Session,
    subject_id: str,
    lineage: Sequence[str],
    purpose: str,
    inherited: Sequence[ConsentState] = (),
) -> None:
    """Re-derive the state of one purpose from the lineage's records.

    The grant epoch is kept while the grant in force is the same one (same start), taken over from
    an ``inherited`` state (a merged subject's) that had the same grant, and otherwise set to now.
    """
    rows = session.execute(
        select(
            ConsentRecord.record_id,
            ConsentRecord.seq,
            ConsentRecord.status,
            ConsentRecord.collected_at,
            ConsentRecord.expires_at,
        ).where(ConsentRecord.subject_id.in_(list(lineage)), ConsentRecord.purpose == purpose)
    )
    state = derive([Decision(*row) for row in rows])
    existing = session.get(ConsentState, (subject_id, purpose))
    if state is None:
        if existing is not None:
            session.delete(existing)
        return
    now = utcnow()
    epoch = None
    if state.grant_started_at is not None:
        epoch = now
        for previous in (existing, *inherited):
            if previous is not None and previous.grant_started_at == state.grant_started_at and previous.grant_epoch:
                epoch = previous.grant_epoch
                break
        else:
            if existing is None and not inherited:
                # A first own grant to a purpose already in force through its parent continues that
                # grant: what was collected under the parent's grant stays usable for the child.
                above = effective(purpose, True, _states(session, subject_id), now)
                if above.in_force and above.grant_epoch is not None:
                    epoch = above.grant_epoch
    if existing is None:
        existing = ConsentState(subject_id=subject_id, purpose=purpose)
        session.add(existing)
    existing.status = state.status
    existing.record_id = state.record_id
    existing.collected_at = state.collected_at
    existing.expires_at = state.expires_at
    existing.grant_started_at = state.grant_started_at
    existing.grant_epoch = epoch
    existing.updated_at = now
    session.flush()


def absorb(session: Session, survivor: str, lineage: Sequence[str], loser: str) -> None:
    """After a merge: the survivor's state is re-derived from the whole lineage's records, so for
    each purpose the decision collected last wins, whichever subject it was recorded under; a grant
    that came from the merged subject keeps its epoch, so the history collected under it stays usable."""
    inherited = {
        s.purpose: s for s in session.scalars(select(ConsentState).where(ConsentState.subject_id == loser)).all()
    }
    for state in inherited.values():
        session.expunge(state)
    session.execute(delete(ConsentState).where(ConsentState.subject_id == loser))
    affected = set(inherited) | set(
        session.scalars(select(ConsentState.purpose).where(ConsentState.subject_id == survivor))
    )
    for purpose in affected:
        _recompute(session, survivor, lineage, purpose, [inherited[purpose]] if purpose in inherited else [])


# -- reading ---------------------------------------------------------------------------------------


_STATE_COLUMNS = (
    ConsentState.purpose,
    ConsentState.status,
    ConsentState.record_id,
    ConsentState.collected_at,
    ConsentState.expires_at,
    ConsentState.grant_started_at,
    ConsentState.grant_epoch,
)


_STATES = select(*_STATE_COLUMNS).where(ConsentState.subject_id == bindparam("subject_id"))
_STATES_OF_SUBJECTS = select(ConsentState.subject_id, *_STATE_COLUMNS).where(
    ConsentState.subject_id.in_(bindparam("subjects", expanding=True))
)


def states_query(subject_id: str) -> Query:
    """The statement that reads the subject's consent states (for ``kit.sql.prefetch``)."""
    return _STATES, {"subject_id": subject_id}


def _states(session: Session, subject_id: str) -> dict[str, State]:
    """The subject's current state per purpose."""
    return {purpose: State(*rest) for purpose, *rest in rows(session, *states_query(subject_id))}


def effective_status(session: Session, subject_id: str, purpose: PurposeRule, now: datetime | None = None) -> Effective:
    """Whether ``purpose`` may be used for the subject now (hierarchy, expiry, legal basis)."""
    if not purpose.needs_consent:
        return effective(purpose.key, False, {}, now or utcnow())
    return effective(purpose.key, True, _states(session, subject_id), now or utcnow())


def in_force(session: Session, subject_id: str, now: datetime | None = None) -> dict[str, Effective]:
    """Every purpose in force for the subject now, with the grant that allows it."""
    now = now or utcnow()
    states = _states(session, subject_id)
    result = {}
    for key, rule in purposes.rules(session).items():
        verdict = effective(key, rule.needs_consent, states, now)
        if verdict.in_force:
            result[key] = verdict
    return result


EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class CollectionGate:
    """What may be collected for one subject right now, and the stamp to put on it."""

    purposes: tuple[PurposeRule, ...]
    epoch: datetime  # the subject's latest grant epoch: collected data is stamped with it
    _allowing: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def allowing(self, category: str) -> list[str]:
        """The purposes in force whose policy covers ``category`` (empty: do not collect)."""
        found = self._allowing.get(category)
        if found is None:
            found = self._allowing[category] = [rule.key for rule in self.purposes if rule.allows(category)]
        return found


def collection_gates(session: Session, subject_ids: Sequence[str], now: datetime) -> dict[str, CollectionGate]:
    """Gates for many subjects with two queries: their consent states and the purpose rules.

    Only purposes whose policy allows something can let data in, so only they are evaluated.
    """
    states: dict[str, dict[str, State]] = {sid: {} for sid in subject_ids}
    if subject_ids:
        for subject_id, purpose, *rest in rows(session, _STATES_OF_SUBJECTS, {"subjects": list(states)}):
            states[subject_id][purpose] = State(*rest)
    candidates = [rule for rule in purposes.rules(session).values() if rule.categories]
    without_consent = tuple(rule for rule in candidates if not rule.needs_consent)
    # A purpose resting on consent can only be in force through a record of its own or of a
    # purpose above it: index the candidates by every key at or above them, and evaluate for each
    # subject only those beneath the purposes it has records for.
    beneath: dict[str, list[PurposeRule]] = {}
    for rule in candidates:
        if rule.needs_consent:
            for key in ancestors(rule.key):
                beneath.setdefault(key, []).append(rule)
    gates = {}
    # Subjects with the same purposes in force share the answers of ``allowing``.
    allowing: dict[tuple[str, ...], dict[str, list[str]]] = {}
    for sid, subject_states in states.items():
        in_force = list(without_consent)
        epoch = EPOCH_ZERO
        reachable = {rule.key: rule for key in subject_states for rule in beneath.get(key, ())}
        for rule in reachable.values():
            verdict = effective(rule.key, True, subject_states, now)
            if verdict.in_force:
                in_force.append(rule)
                if verdict.grant_epoch is not None:
                    epoch = max(epoch, verdict.grant_epoch)
        ordered = tuple(sorted(in_force, key=lambda rule: rule.key))
        gates[sid] = CollectionGate(ordered, epoch, allowing.setdefault(tuple(r.key for r in ordered), {}))
    return gates


def collectable_categories(session: Session, subject_id: str, now: datetime | None = None) -> set[str]:
    """The data categories that may be collected for the subject now: the union of the policies of
    every purpose in force (granted and unexpired, or not resting on consent)."""
    rules = purposes.rules(session, in_force(session, subject_id, now))
    return {category for rule in rules.values() for category in rule.categories}


def state(session: Session, subject_id: str, now: datetime | None = None) -> list[StateOut]:
    now = now or utcnow()
    return [
        StateOut(
            purpose=purpose,
            status="expired" if s.status == GRANTED and not s.granted_at(now) else s.status,
            since=s.collected_at,
            expires_at=s.expires_at,
            grant_started_at=s.grant_started_at,
            record_id=s.record_id,
        )
        for purpose, s in sorted(_states(session, subject_id).items())
    ]


def consents_of(session: Session, cipher: SubjectCipher, lineage: Sequence[str], *, client_id: str) -> ConsentsOut:
    """A privacy client's read of the subject's consents (``cipher``'s subject, live, and its
    ``lineage``): the state per purpose and the whole history. The read is logged."""
    audit.log(session, client_id=client_id, action="consent.read", subject_id=cipher.subject_id)
    return ConsentsOut(
        subject_id=cipher.subject_id,
        state=state(session, cipher.subject_id),
        history=history(session, cipher, lineage),
    )


def history(session: Session, cipher: SubjectCipher | None, lineage: Sequence[str]) -> list[HistoryRecord]:
    """Every record of the lineage in ledger order, evidence decrypted when the keys still exist."""
    rows = session.scalars(
        select(ConsentRecord).where(ConsentRecord.subject_id.in_(list(lineage))).order_by(ConsentRecord.seq)
    )
    result = []
    for r in rows:
        evidence = None
        if r.evidence_ct is not None and cipher is not None:
            raw = cipher.as_subject(r.subject_id).decrypt(TABLE, "evidence", r.record_id, r.evidence_ct)
            evidence = json.loads(raw)
        result.append(
            HistoryRecord(
                seq=r.seq,
                record_id=r.record_id,
                receipt_id=r.receipt_id,
                subject_id=r.subject_id,
                purpose=r.purpose,
                status=ConsentStatus(r.status),
                notice=NoticeRef(key=r.notice_key, version=r.notice_version)
                if r.notice_key and r.notice_version
                else None,
                source=r.source,
                collected_at=r.collected_at,
                recorded_at=r.recorded_at,
                expires_at=r.expires_at,
                client_id=r.client_id,
                evidence=evidence,
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
        )
    return result


def verify(session: Session) -> Verification:
    """Walk the whole ledger; name the first record whose link is broken."""
    return verify_chain(session, CHAIN, ConsentRecord, "record_id", _content)
