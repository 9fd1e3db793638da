"""Declared preferences: what people tell us. Stored only when a purpose in force may use the
preference's category (its policy covers it); versioned, values encrypted with the subject key."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.crypto.service import SubjectCipher
from profilestore.identity.schemas import SubjectStatus
from profilestore.kit.errors import InvalidInput
from profilestore.kit.ids import new_id
from profilestore.kit.moving import move_subject_rows
from profilestore.kit.sql import Query, rows
from profilestore.kit.time import utcnow
from profilestore.preferences.models import Preference
from profilestore.preferences.schemas import PreferenceItem, PreferenceOut, PreferencesIn, PreferencesStored
from profilestore.purposes import service as purposes
from profilestore.purposes.rules import covers

TABLE = "preferences"


@dataclass(frozen=True)
class PreparedPreferences:
    body: PreferencesIn


def prepare(session: Session, settings: Settings, body: PreferencesIn, *, now: datetime) -> PreparedPreferences:
    """Check categories, duplicates and the clock before anything is written."""
    seen: set[str] = set()
    for index, item in enumerate(body.preferences):
        if item.key in seen:
            raise InvalidInput(f"preference '{item.key}' is listed twice", field=f"preferences.{index}.key")
        seen.add(item.key)
        purposes.require_categories(session, [item.category], field=f"preferences.{index}.category")
    if body.declared_at > now + timedelta(seconds=settings.clock_skew_seconds):
        raise InvalidInput("declared_at is in the future", field="declared_at")
    return PreparedPreferences(body)


def admitted(
    prepared: PreparedPreferences, subject_status: str, allowed_categories: Iterable[str]
) -> list[PreferenceItem]:
    """The preferences that may be collected: those whose category ``allowed_categories`` (the
    union of the policies of the subject's purposes in force) covers; none for a restricted
    subject, whose processing has stopped."""
    if subject_status == SubjectStatus.restricted:
        return []
    allowed = list(allowed_categories)
    return [item for item in prepared.body.preferences if covers(allowed, item.category)]


def nothing_stored(prepared: PreparedPreferences, subject_id: str | None) -> PreferencesStored:
    """The answer for a post of which nothing may be kept (no subject, no consent, restricted)."""
    keys = [item.key for item in prepared.body.preferences]
    return PreferencesStored(subject_id=subject_id, stored=0, dropped=len(keys), dropped_keys=keys)


def store(
    session: Session,
    cipher: SubjectCipher,
    prepared: PreparedPreferences,
    kept: list[PreferenceItem],
    *,
    client_id: str,
) -> PreferencesStored:
    """Store the preferences ``kept`` (those ``admitted``); count the rest of the post as dropped."""
    body = prepared.body
    for item in kept:
        _add_version(session, cipher, item, body.source, body.declared_at, client_id)
    session.flush()
    kept_keys = {item.key for item in kept}
    dropped = [item.key for item in body.preferences if item.key not in kept_keys]
    return PreferencesStored(subject_id=cipher.subject_id, stored=len(kept), dropped=len(dropped), dropped_keys=dropped)


def _current(session: Session, subject_id: str, key: str) -> Preference | None:
    return session.scalars(
        select(Preference).where(
            Preference.subject_id == subject_id, Preference.key == key, Preference.superseded_at.is_(None)
        )
    ).one_or_none()


def _add_version(
    session: Session, cipher: SubjectCipher, item: PreferenceItem, source: str, declared_at: datetime, client_id: str
) -> None:
    """A later declaration supersedes the current one; a late-arriving older one joins the history."""
    current = _current(session, cipher.subject_id, item.key)
    superseded_at = None
    if current is not None:
        if current.declared_at <= declared_at:
            current.superseded_at = declared_at
            session.flush()
        else:
            superseded_at = current.declared_at
    preference_id = new_id("pref")
    session.add(
        Preference(
            subject_id=cipher.subject_id,
            preference_id=preference_id,
            key=item.key,
            category=item.category,
            value_ct=cipher.encrypt(TABLE, "value", preference_id, json.dumps(item.value).encode()),
            source=source,
            declared_at=declared_at,
            recorded_at=utcnow(),
            superseded_at=superseded_at,
            client_id=client_id,
        )
    )


def current(session: Session, cipher: SubjectCipher) -> list[PreferenceOut]:
    """The subject's current preferences, decrypted."""
    stored = session.scalars(
        select(Preference)
        .where(Preference.subject_id == cipher.subject_id, Preference.superseded_at.is_(None))
        .order_by(Preference.key)
    )
    return [
        PreferenceOut(
            key=r.key,
            value=json.loads(cipher.decrypt(TABLE, "value", r.preference_id, r.value_ct)),
            category=r.category,
            source=r.source,
            declared_at=r.declared_at,
        )
        for r in stored
    ]


def absorb(session: Session, source: SubjectCipher, target: SubjectCipher) -> None:
    """Merge: move the merged subject's preferences to the survivor, re-encrypted under its key;
    per key, the declaration made last stays current."""
    move_subject_rows(
        session, Preference, source, target, table=TABLE, column="value_ct", row_key=lambda p: p.preference_id
    )
    currents = session.scalars(
        select(Preference)
        .where(Preference.subject_id == target.subject_id, Preference.superseded_at.is_(None))
        .order_by(Preference.key, Preference.declared_at.desc())
    ).all()
    latest: dict[str, Preference] = {}
    for row in currents:
        if row.key in latest:
            row.superseded_at = latest[row.key].declared_at
        else:
            latest[row.key] = row
    session.flush()


_CURRENT = (
    select(
        Preference.preference_id,
        Preference.key,
        Preference.category,
        Preference.value_ct,
        Preference.source,
        Preference.declared_at,
        Preference.recorded_at,
    )
    .where(Preference.subject_id == bindparam("subject_id"), Preference.superseded_at.is_(None))
    .order_by(Preference.key)
)


def current_query(subject_id: str) -> Query:
    """The statement that reads the subject's current preferences (for ``kit.sql.prefetch``)."""
    return _CURRENT, {"subject_id": subject_id}


def held(session: Session, subject_id: str) -> int:
    """How many current preferences the subject has (for ``explain``: counted, none read)."""
    current = (Preference.subject_id == subject_id, Preference.superseded_at.is_(None))
    return session.scalar(select(func.count()).select_from(Preference).where(*current)) or 0


def permitted(
    session: Session, cipher: SubjectCipher, categories: Iterable[str], since: datetime
) -> tuple[list[PreferenceOut], Counter[str]]:
    """Current preferences a view may use (category covered, recorded at or after ``since``, the
    grant epoch), and the count of those left out by reason. Only the kept ones are decrypted."""
    allowed = list(categories)
    kept, left_out = [], Counter[str]()
    current_rows = rows(session, *current_query(cipher.subject_id))
    for preference_id, key, category, value_ct, source, declared_at, recorded_at in current_rows:
        if not covers(allowed, category):
            left_out["category_not_in_policy"] += 1
        elif recorded_at < since:
            left_out["collected_before_consent"] += 1
        else:
            value = json.loads(cipher.decrypt(TABLE, "value", preference_id, value_ct))
            kept.append(PreferenceOut(key=key, value=value, category=category, source=source, declared_at=declared_at))
    return kept, left_out
