"""Identity: identifiers → one subject, created on first sight, merged when one request shows
that two subjects are one person.

A merge folds the younger subject into the older: identifiers, preferences and (through its
service) consent state move to the survivor, re-encrypted under the survivor's key; ledger
records never move (the chain covers them), so the survivor keeps the merged subject's keys
through its *lineage* (itself and every subject merged into it). Erasing the survivor shreds
the keys of its whole lineage.

Identity sits above the domains that keep per-subject rows: it calls their ``absorb`` steps
during a merge, and they never import identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from profilestore.audit import service as audit
from profilestore.config import Settings
from profilestore.consent import service as consent
from profilestore.crypto.service import SubjectCipher, Vault
from profilestore.events import service as events
from profilestore.identity.models import Identifier, Subject, SubjectMerge
from profilestore.identity.normalise import normalise
from profilestore.identity.schemas import SubjectStatus
from profilestore.kit.errors import Conflict, InvalidInput
from profilestore.kit.ids import new_id
from profilestore.kit.sql import Query, rows
from profilestore.kit.time import utcnow
from profilestore.preferences import service as preferences
from profilestore.signals import service as signals

TABLE = "identifiers"


@dataclass
class Resolution:
    subject_id: str
    lineage: tuple[str, ...]
    created: bool = False
    merged: tuple[str, ...] = ()
    _cipher: SubjectCipher | None = field(default=None, repr=False)

    def cipher(self, vault: Vault) -> SubjectCipher:
        if self._cipher is None:
            self._cipher = vault.cipher(self.subject_id, self.lineage)
        return self._cipher


def _indexes(
    vault: Vault, settings: Settings, identifiers: dict[str, str], field_prefix: str = ""
) -> dict[str, tuple[str, bytes]]:
    """kind → (normalised value, blind index); invalid identifiers are refused by field."""
    result = {}
    for kind, value in identifiers.items():
        try:
            normalised = normalise(kind, value, default_region=settings.default_phone_region)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field=f"{field_prefix}{exc.field}") from exc
        result[kind] = (normalised, vault.blind_index(kind, normalised))
    return result


def _owners(session: Session, indexes: list[bytes]) -> dict[bytes, str]:
    rows = session.execute(
        select(Identifier.blind_index, Identifier.subject_id).where(Identifier.blind_index.in_(indexes))
    )
    return {bytes(index): subject for index, subject in rows}


def lineage(session: Session, subject_id: str) -> tuple[str, ...]:
    merged = session.scalars(select(SubjectMerge.subject_id).where(SubjectMerge.merged_into == subject_id))
    return (subject_id, *sorted(merged))


def current(session: Session, subject_id: str) -> str | None:
    """The live subject for an id: itself, or the survivor it was merged into; None if unknown."""
    subject = session.get(Subject, subject_id)
    if subject is None:
        return None
    return subject.merged_into or subject.id


_survivor = aliased(Subject)
_LIVE_STATUS = (
    select(Subject.id, Subject.status, _survivor.id, _survivor.status)
    .outerjoin(_survivor, _survivor.id == Subject.merged_into)
    .where(Subject.id == bindparam("subject_id"))
)


def live_status_query(subject_id: str) -> Query:
    """The statement ``live_status`` runs (for ``kit.sql.prefetch``)."""
    return _LIVE_STATUS, {"subject_id": subject_id}


def live_status(session: Session, subject_id: str) -> tuple[str, str] | None:
    """(live subject id, status) for an id, following a merge; None for an unknown id. One query:
    every view asks. A merged subject points straight at its final survivor (merges flatten)."""
    found = rows(session, *live_status_query(subject_id))
    row = found[0] if found else None
    if row is None:
        return None
    own_id, own_status, live_id, live_status_ = row
    if live_id is not None:
        return live_id, live_status_
    return None if own_status == SubjectStatus.merged else (own_id, own_status)


def find(session: Session, vault: Vault, settings: Settings, identifiers: dict[str, str]) -> str | None:
    """The subject these identifiers name, without creating or merging anything."""
    owners = set(_owners(session, [ix for _, ix in _indexes(vault, settings, identifiers).values()]).values())
    if len(owners) > 1:
        raise Conflict("these identifiers belong to different subjects; look them up one at a time")
    return owners.pop() if owners else None


def look_up(
    session: Session, vault: Vault, settings: Settings, identifiers: dict[str, str], *, client_id: str
) -> str | None:
    """A privacy client's ``find``, logged: which kinds of identifier it asked with and whether
    anyone was found (never the identifiers themselves)."""
    subject_id = find(session, vault, settings, identifiers)
    audit.log(
        session,
        client_id=client_id,
        action="subject.resolve",
        subject_id=subject_id,
        detail={"identifier_kinds": sorted(identifiers), "found": subject_id is not None},
    )
    return subject_id


def resolve(
    session: Session,
    vault: Vault,
    settings: Settings,
    identifiers: dict[str, str],
    *,
    client_id: str | None,
    create: bool = True,
) -> Resolution | None:
    """The subject of ``identifiers``: found, created (when ``create``), or the survivor of a merge.

    Identifiers not yet known are attached to the subject. Returns None only when nothing matched
    and ``create`` is false.
    """
    indexes = _indexes(vault, settings, identifiers)
    wanted = [ix for _, ix in indexes.values()]
    owners = _owners(session, wanted)
    subjects = set(owners.values())
    created = False
    if not subjects:
        if not create:
            return None
        survivor = _create_subject(session, vault)
        created = True
    else:
        survivor = _oldest(session, subjects)
    merged = tuple(sorted(subjects - {survivor}))
    for loser in merged:
        _merge(session, vault, settings, survivor, loser, client_id)

    resolution = Resolution(survivor, lineage(session, survivor), created=created, merged=merged)
    missing = {kind: v for kind, v in indexes.items() if v[1] not in owners}
    if missing:
        _attach(session, resolution.cipher(vault), survivor, missing)
        # Another transaction may have claimed one of them meanwhile (PostgreSQL): resolve again,
        # which merges with it. A subject created here that ended up owning nothing goes.
        late = set(_owners(session, [ix for _, ix in missing.values()]).values()) - {survivor}
        if late:
            if (
                created
                and not session.scalars(select(Identifier.blind_index).where(Identifier.subject_id == survivor)).first()
            ):
                session.execute(delete(Subject).where(Subject.id == survivor))
                vault.shred([survivor])
            return resolve(session, vault, settings, identifiers, client_id=client_id, create=create)
    return resolution


@dataclass(frozen=True)
class Known:
    """Who a set of identifiers names, found without writing anything.

    ``complete`` is false when some identifiers are new or they span two subjects: linking them
    (``link``) would write. ``subject_id`` is then the subject a link would keep (the oldest).
    """

    subject_id: str
    status: str
    complete: bool


def index_sets(
    vault: Vault, settings: Settings, identifier_sets: Sequence[dict[str, str]], *, field_prefix: str = ""
) -> list[tuple[bytes, ...]]:
    """The blind indexes of many identifier sets, validating each (no database). An identifier
    seen twice in the batch is normalised and hashed once: an event batch names few people often."""
    memo: dict[tuple[str, str], bytes] = {}
    result = []
    for i, identifiers in enumerate(identifier_sets):
        indexes = []
        for kind, value in identifiers.items():
            index = memo.get((kind, value))
            if index is None:
                ((_, index),) = _indexes(vault, settings, {kind: value}, field_prefix.format(index=i)).values()
                memo[(kind, value)] = index
            indexes.append(index)
        result.append(tuple(indexes))
    return result


_OWNERS = select(Identifier.blind_index, Identifier.subject_id).where(
    Identifier.blind_index.in_(bindparam("indexes", expanding=True))
)
_SUBJECTS = select(Subject.id, Subject.status, Subject.created_at).where(
    Subject.id.in_(bindparam("subjects", expanding=True))
)


def known_by_indexes(session: Session, indexed: Sequence[tuple[bytes, ...]]) -> list[Known | None]:
    """Who each set of blind indexes names, with two queries and no writes; None where no
    identifier of the set is known."""
    owners = {
        bytes(ix): sid for ix, sid in rows(session, _OWNERS, {"indexes": sorted({i for s in indexed for i in s})})
    }
    subjects = {}
    if owners:
        params = {"subjects": sorted(set(owners.values()))}
        subjects = {sid: (status, created_at) for sid, status, created_at in rows(session, _SUBJECTS, params)}
    answers: dict[tuple[bytes, ...], Known | None] = {}  # a batch names few people, each many times
    for wanted in indexed:
        if wanted in answers:
            continue
        mine = {owners[ix] for ix in wanted if ix in owners}
        if not mine:
            answers[wanted] = None
            continue
        oldest = min(mine, key=lambda sid: (subjects[sid][1], sid))
        complete = len(mine) == 1 and all(ix in owners for ix in wanted)
        answers[wanted] = Known(oldest, subjects[oldest][0], complete)
    return [answers[wanted] for wanted in indexed]


def lookup_known(
    session: Session,
    vault: Vault,
    settings: Settings,
    identifier_sets: list[dict[str, str]],
    *,
    field_prefix: str = "",
) -> list[Known | None]:
    """Resolve many identifier sets (an event batch's people) with two queries and no writes.
    Every set is validated first; None where no identifier is known."""
    return known_by_indexes(session, index_sets(vault, settings, identifier_sets, field_prefix=field_prefix))


def link(
    session: Session, vault: Vault, settings: Settings, identifiers: dict[str, str], *, client_id: str | None
) -> None:
    """Attach new identifiers to their subject, merging subjects they show to be one person."""
    resolve(session, vault, settings, identifiers, client_id=client_id, create=False)


def _create_subject(session: Session, vault: Vault) -> str:
    now = utcnow()
    subject_id = new_id("sub")
    session.add(Subject(id=subject_id, status=SubjectStatus.active, merged_into=None, created_at=now, updated_at=now))
    session.flush()
    vault.create_subject_key(subject_id)
    return subject_id


def _oldest(session: Session, subject_ids: set[str]) -> str:
    rows = session.execute(select(Subject.id, Subject.created_at).where(Subject.id.in_(subject_ids)))
    return min(rows, key=lambda row: (row.created_at, row.id)).id


def _attach(session: Session, cipher: SubjectCipher, subject_id: str, missing: dict[str, tuple[str, bytes]]) -> None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    rows = [
        {
            "blind_index": index,
            "kind": kind,
            "subject_id": subject_id,
            "value_ct": cipher.encrypt(TABLE, "value", index.hex(), value.encode()),
            "created_at": now,
        }
        for kind, (value, index) in missing.items()
    ]
    session.execute(insert(Identifier).values(rows).on_conflict_do_nothing())


def _merge(
    session: Session, vault: Vault, settings: Settings, survivor: str, loser: str, client_id: str | None
) -> None:
    now = utcnow()
    source = vault.cipher(loser, lineage(session, loser))
    target = vault.cipher(survivor, lineage(session, survivor))

    for row in session.scalars(select(Identifier).where(Identifier.subject_id == loser)):
        key = bytes(row.blind_index).hex()
        row.value_ct = target.encrypt(TABLE, "value", key, source.decrypt(TABLE, "value", key, row.value_ct))
        row.subject_id = survivor
    preferences.absorb(session, source, target)
    repeated = events.absorb(session, source, target)
    signals.absorb(session, source, target, settings.signals, now)
    if repeated:  # messages both held: counted once, from the survivor's events
        events.rebuild_signals(session, vault, settings, survivor, now, repeated)

    # Flatten: everything once merged into the loser now belongs to the survivor.
    session.execute(update(SubjectMerge).where(SubjectMerge.merged_into == loser).values(merged_into=survivor))
    session.execute(update(Subject).where(Subject.merged_into == loser).values(merged_into=survivor, updated_at=now))
    session.add(SubjectMerge(subject_id=loser, merged_into=survivor, merged_at=now, client_id=client_id))
    loser_row = session.get(Subject, loser)
    assert loser_row is not None
    if loser_row.status == SubjectStatus.restricted:  # the person's restriction: the merged person keeps it
        restrict = update(Subject).where(Subject.id == survivor).values(status=SubjectStatus.restricted, updated_at=now)
        session.execute(restrict)
    loser_row.status, loser_row.merged_into, loser_row.updated_at = SubjectStatus.merged, survivor, now
    session.flush()
    consent.absorb(session, survivor, lineage(session, survivor), loser)
