"""The default taxonomy: fideslang's data uses (our purposes) and data categories, plus the one
category tree fideslang lacks, ``user.preferences`` (declared interests and preferences).

Defaults are inserted once and never overwrite what an operator changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from fideslang.default_taxonomy import DEFAULT_TAXONOMY


@dataclass(frozen=True)
class TaxonomyEntry:
    key: str
    parent: str | None
    name: str
    description: str | None


EXTRA_CATEGORIES = (
    TaxonomyEntry("user.preferences", "user", "Declared Preferences", "What a person told us they like or want."),
    TaxonomyEntry("user.preferences.interests", "user.preferences", "Declared Interests", "Topics, brands, styles."),
    TaxonomyEntry("user.preferences.channel", "user.preferences", "Channel Preferences", "How to be contacted."),
    TaxonomyEntry("user.preferences.frequency", "user.preferences", "Frequency Preferences", "How often."),
    TaxonomyEntry("user.preferences.size", "user.preferences", "Size and Fit", "Sizes and fits."),
)

# Purposes whose processing rests on something other than consent. Everything else defaults to
# consent: the safe choice, an operator may relax it per purpose.
LEGAL_BASIS = {
    "essential": "contract",
    "essential.fraud_detection": "legitimate_interest",
    "essential.legal_obligation": "legal_obligation",
    "third_party_sharing.legal_obligation": "legal_obligation",
    "functional": "contract",
}

# Default policies, by purpose subtree: a usable start, not a recommendation. Every other
# purpose starts with an empty policy and may use nothing until an operator says otherwise.
POLICIES = {
    "personalize": ("user.behavior", "user.preferences"),
    "marketing": ("user.behavior", "user.preferences"),
    "analytics": ("user.behavior",),
}


def default_categories() -> list[TaxonomyEntry]:
    entries = [
        TaxonomyEntry(c.fides_key, c.parent_key, c.name or c.fides_key, c.description)
        for c in DEFAULT_TAXONOMY.data_category
    ]
    return _parents_first([*entries, *EXTRA_CATEGORIES])


def default_purposes() -> list[TaxonomyEntry]:
    entries = [
        TaxonomyEntry(u.fides_key, u.parent_key, u.name or u.fides_key, u.description)
        for u in DEFAULT_TAXONOMY.data_use
    ]
    return _parents_first(entries)


def _by_prefix(key: str, table: dict[str, tuple[str, ...]] | dict[str, str]) -> object | None:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = table.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def default_legal_basis(key: str) -> str:
    found = _by_prefix(key, LEGAL_BASIS)
    return str(found) if found else "consent"


def default_policy(key: str) -> tuple[str, ...]:
    found = _by_prefix(key, POLICIES)
    return tuple(found) if isinstance(found, tuple) else ()


def _parents_first(entries: list[TaxonomyEntry]) -> list[TaxonomyEntry]:
    return sorted(entries, key=lambda e: (e.key.count("."), e.key))
