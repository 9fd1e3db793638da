"""Purposes, data categories, policies and notices: the vocabulary every other rule is written in.

Nothing here is cached between requests: an operator's change through one process must show on the
next request to any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from profilestore.config import Settings
from profilestore.kit.errors import Conflict, InvalidInput, NotFound
from profilestore.kit.sql import Query, rows
from profilestore.kit.time import utcnow
from profilestore.purposes import taxonomy
from profilestore.purposes.models import DataCategory, Notice, NoticePurpose, Purpose, PurposeCategory
from profilestore.purposes.rules import KEY_PATTERN, ancestors, covers, parent_of
from profilestore.purposes.schemas import (
    CategoryIn,
    CategoryOut,
    LegalBasis,
    NoticeIn,
    NoticeOut,
    NoticeWithText,
    PurposeIn,
    PurposeOut,
)


class UnknownPurpose(InvalidInput):
    code = "unknown_purpose"


class UnknownCategory(InvalidInput):
    code = "unknown_category"


class UnknownNotice(InvalidInput):
    code = "unknown_notice"


@dataclass(frozen=True)
class PurposeRule:
    """What the consent and collection rules need to know about one purpose."""

    key: str
    legal_basis: str
    retention_days: int
    consent_valid_days: int
    categories: frozenset[str]

    @property
    def needs_consent(self) -> bool:
        return self.legal_basis == LegalBasis.consent

    def allows(self, category: str) -> bool:
        return covers(self.categories, category)


# -- defaults --------------------------------------------------------------------------------------


def load_defaults(session: Session, settings: Settings) -> tuple[int, int]:
    """Insert the default taxonomy where missing; returns (categories, purposes) added."""
    now = utcnow()
    have_categories = set(session.scalars(select(DataCategory.key)))
    added_categories = 0
    for entry in taxonomy.default_categories():
        if entry.key not in have_categories:
            session.add(
                DataCategory(
                    key=entry.key, parent=entry.parent, name=entry.name, description=entry.description, is_default=True
                )
            )
            added_categories += 1
    session.flush()

    have_purposes = set(session.scalars(select(Purpose.key)))
    added_purposes = 0
    for entry in taxonomy.default_purposes():
        if entry.key in have_purposes:
            continue
        session.add(
            Purpose(
                key=entry.key,
                parent=entry.parent,
                name=entry.name,
                description=entry.description,
                legal_basis=taxonomy.default_legal_basis(entry.key),
                retention_days=settings.default_retention_days,
                consent_valid_days=settings.default_consent_valid_days,
                is_default=True,
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        for category in taxonomy.default_policy(entry.key):
            session.add(PurposeCategory(purpose=entry.key, category=category))
        added_purposes += 1
    session.flush()
    return added_categories, added_purposes


# -- purposes --------------------------------------------------------------------------------------


def _categories_of(session: Session, keys: Iterable[str]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {k: [] for k in keys}
    if result:
        rows = session.execute(
            select(PurposeCategory.purpose, PurposeCategory.category)
            .where(PurposeCategory.purpose.in_(list(result)))
            .order_by(PurposeCategory.category)
        )
        for purpose, category in rows:
            result[purpose].append(category)
    return result


def _out(purpose: Purpose, categories: list[str]) -> PurposeOut:
    return PurposeOut(
        key=purpose.key,
        name=purpose.name,
        parent=purpose.parent,
        description=purpose.description,
        legal_basis=LegalBasis(purpose.legal_basis),
        retention_days=purpose.retention_days,
        consent_valid_days=purpose.consent_valid_days,
        categories=categories,
        is_default=purpose.is_default,
    )


def list_purposes(session: Session) -> list[PurposeOut]:
    purposes = session.scalars(select(Purpose).order_by(Purpose.key)).all()
    categories = _categories_of(session, [p.key for p in purposes])
    return [_out(p, categories[p.key]) for p in purposes]


def get_purpose(session: Session, key: str) -> PurposeOut:
    purpose = session.get(Purpose, key)
    if purpose is None:
        raise NotFound("no such purpose", field="key")
    return _out(purpose, _categories_of(session, [key])[key])


_KNOWN_CATEGORIES = select(DataCategory.key).where(DataCategory.key.in_(bindparam("keys", expanding=True)))


def known_categories(session: Session, categories: Iterable[str]) -> set[str]:
    """Which of ``categories`` the taxonomy has."""
    wanted = sorted(set(categories))
    return {key for (key,) in rows(session, _KNOWN_CATEGORIES, {"keys": wanted})} if wanted else set()


def require_categories(session: Session, categories: Iterable[str], *, field: str) -> None:
    wanted = set(categories)
    missing = sorted(wanted - known_categories(session, wanted))
    if missing:
        raise UnknownCategory(f"unknown data category '{missing[0]}'", field=field)


def put_purpose(session: Session, key: str, spec: PurposeIn, settings: Settings) -> PurposeOut:
    """Create or replace a purpose. Custom purposes live beneath an existing one: their key is the
    parent's key plus one segment, so ``a.b`` is always below ``a``."""
    if not KEY_PATTERN.match(key) or len(key) > 200:
        raise InvalidInput("purpose key must be dotted lower-case segments such as 'personalize.email'", field="key")
    parent = parent_of(key)
    if spec.parent is not None and spec.parent != parent:
        raise InvalidInput(f"the parent of '{key}' is its key prefix '{parent}'", field="parent")
    if parent is not None and session.get(Purpose, parent) is None:
        raise UnknownPurpose(f"parent purpose '{parent}' does not exist", field="parent")
    require_categories(session, spec.categories, field="categories")

    now = utcnow()
    purpose = session.get(Purpose, key)
    if purpose is None:
        purpose = Purpose(key=key, parent=parent, is_default=False, created_at=now)
        session.add(purpose)
    purpose.name = spec.name
    purpose.description = spec.description
    purpose.legal_basis = spec.legal_basis.value
    purpose.retention_days = spec.retention_days or settings.default_retention_days
    purpose.consent_valid_days = spec.consent_valid_days or settings.default_consent_valid_days
    purpose.updated_at = now
    session.flush()
    session.execute(delete(PurposeCategory).where(PurposeCategory.purpose == key))
    for category in sorted(set(spec.categories)):
        session.add(PurposeCategory(purpose=key, category=category))
    session.flush()
    return get_purpose(session, key)


def require_purposes(session: Session, keys: Sequence[str], *, field: str) -> None:
    """Refuse unknown purpose keys, naming the first one and where it was."""
    known = set(session.scalars(select(Purpose.key).where(Purpose.key.in_(set(keys)))))
    for index, key in enumerate(keys):
        if key not in known:
            raise UnknownPurpose(f"unknown purpose '{key}'", field=field.format(index=index))


_RULES = select(
    Purpose.key, Purpose.legal_basis, Purpose.retention_days, Purpose.consent_valid_days, PurposeCategory.category
).outerjoin(PurposeCategory, PurposeCategory.purpose == Purpose.key)
_RULES_OF = _RULES.where(Purpose.key.in_(bindparam("keys", expanding=True)))


def rules_query(keys: Iterable[str] | None = None) -> Query:
    """The statement ``rules`` runs (for ``kit.sql.prefetch``)."""
    return (_RULES, {}) if keys is None else (_RULES_OF, {"keys": sorted(set(keys))})


def rules(session: Session, keys: Iterable[str] | None = None) -> dict[str, PurposeRule]:
    """The rules of the given purposes (all purposes when None), read fresh from the database in
    one query: every view and every event batch asks, so it must stay cheap."""
    result = rows(session, *rules_query(keys))
    found: dict[str, tuple[str, int, int, set[str]]] = {}
    for key, basis, retention, valid, category in result:
        entry = found.setdefault(key, (basis, retention, valid, set()))
        if category is not None:
            entry[3].add(category)
    return {
        key: PurposeRule(key, basis, retention, valid, frozenset(categories))
        for key, (basis, retention, valid, categories) in found.items()
    }


# -- categories ------------------------------------------------------------------------------------


def list_categories(session: Session) -> list[CategoryOut]:
    return [
        CategoryOut(key=c.key, parent=c.parent, name=c.name, description=c.description, is_default=c.is_default)
        for c in session.scalars(select(DataCategory).order_by(DataCategory.key))
    ]


def put_category(session: Session, key: str, spec: CategoryIn) -> CategoryOut:
    """Add or rename a category beneath an existing one. Default categories keep their meaning."""
    if not KEY_PATTERN.match(key) or len(key) > 200:
        raise InvalidInput("category key must be dotted lower-case segments", field="key")
    parent = parent_of(key)
    if parent is None or session.get(DataCategory, parent) is None:
        raise UnknownCategory("a new category must sit beneath an existing one", field="key")
    category = session.get(DataCategory, key)
    if category is None:
        category = DataCategory(key=key, parent=parent, is_default=False)
        session.add(category)
    elif category.is_default:
        raise Conflict("default categories cannot be changed", field="key")
    category.name = spec.name
    category.description = spec.description
    session.flush()
    return CategoryOut(key=key, parent=parent, name=spec.name, description=spec.description, is_default=False)


# -- notices ---------------------------------------------------------------------------------------


def _notice_out(notice: Notice, purposes: list[str]) -> NoticeOut:
    return NoticeOut(
        key=notice.key,
        version=notice.version,
        text_sha256=notice.text_sha256,
        purposes=purposes,
        created_at=notice.created_at,
    )


def _notice_purposes(session: Session, key: str, version: int) -> list[str]:
    return list(
        session.scalars(
            select(NoticePurpose.purpose)
            .where(NoticePurpose.notice_key == key, NoticePurpose.notice_version == version)
            .order_by(NoticePurpose.purpose)
        )
    )


def publish_notice(session: Session, spec: NoticeIn, client_id: str | None) -> tuple[NoticeOut, bool]:
    """Publish a notice version; returns (notice, created). A version's text never changes:
    publishing the same text again is a no-op, different text under the same version a conflict."""
    digest = hashlib.sha256(spec.text.encode()).hexdigest()
    existing = session.get(Notice, (spec.key, spec.version))
    if existing is not None:
        if existing.text_sha256 != digest or set(_notice_purposes(session, spec.key, spec.version)) != set(
            spec.purposes
        ):
            raise Conflict("this notice version exists with different content; publish a new version", field="version")
        return _notice_out(existing, _notice_purposes(session, spec.key, spec.version)), False
    require_purposes(session, spec.purposes, field="purposes.{index}")
    notice = Notice(
        key=spec.key, version=spec.version, text=spec.text, text_sha256=digest, created_at=utcnow(), client_id=client_id
    )
    session.add(notice)
    session.flush()
    for purpose in sorted(set(spec.purposes)):
        session.add(NoticePurpose(notice_key=spec.key, notice_version=spec.version, purpose=purpose))
    session.flush()
    return _notice_out(notice, sorted(set(spec.purposes))), True


def get_notice(session: Session, key: str, version: int) -> NoticeWithText:
    notice = session.get(Notice, (key, version))
    if notice is None:
        raise NotFound("no such notice version", field="version")
    return NoticeWithText(**_notice_out(notice, _notice_purposes(session, key, version)).model_dump(), text=notice.text)


def list_notices(session: Session) -> list[NoticeOut]:
    notices = session.scalars(select(Notice).order_by(Notice.key, Notice.version)).all()
    return [_notice_out(n, _notice_purposes(session, n.key, n.version)) for n in notices]


def notice_covering(session: Session, key: str, version: int) -> frozenset[str]:
    """The purposes a notice version names; refuses a notice that does not exist."""
    if session.get(Notice, (key, version)) is None:
        raise UnknownNotice(f"notice '{key}' version {version} does not exist", field="notice")
    return frozenset(_notice_purposes(session, key, version))


def notice_covers(named: frozenset[str], purpose: str) -> bool:
    """A notice that names a purpose also informs about the purposes beneath it."""
    return any(a in named for a in ancestors(purpose))
