"""Pure rules of the purpose and category hierarchies (dotted keys: a parent is a prefix)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


@lru_cache(maxsize=8192)
def ancestors(key: str) -> tuple[str, ...]:
    """``key`` and every key above it, most specific first: a.b.c → (a.b.c, a.b, a)."""
    parts = key.split(".")
    return tuple(".".join(parts[:end]) for end in range(len(parts), 0, -1))


def parent_of(key: str) -> str | None:
    return key.rsplit(".", 1)[0] if "." in key else None


@lru_cache(maxsize=8192)
def _at_or_above(key: str) -> frozenset[str]:
    return frozenset(ancestors(key))


def covers(allowed: Iterable[str], category: str) -> bool:
    """Whether a policy listing ``allowed`` categories covers ``category`` (a parent covers children)."""
    return not _at_or_above(category).isdisjoint(allowed)
