"""Ranking of a view's signals: what people do above what they say, recent above old.

Pure functions over already-permitted evidence, so the rule can be checked on its own:
- any value with behavioural evidence ranks above every declared-only value;
- within a tier, higher (decayed) score first; ties by value, for a stable order;
- a declared value is kept even when behaviour contradicts it, and marked ``contradicted``:
  the dimension has enough behaviour (``contradiction_min_evidence`` events) and none of it
  for that value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import Field

from profilestore.signals.types import Behaviour

BEHAVIOURAL, DECLARED, BOTH = "behavioural", "declared", "both"


@dataclass(frozen=True)
class Declaration:
    dimension: str
    value: str
    declared_at: datetime


@dataclass(slots=True)
class RankedSignal:
    """One value of a view, as it is sent (``ViewOut.signals``): a view makes one per value, so a
    plain slotted class that the response serialises without validating again."""

    value: str
    score: float
    tier: Annotated[str, Field(description="behavioural, declared or both")]
    evidence: int
    last_seen: datetime
    contradicted: bool


def rank(
    behaviour: Iterable[Behaviour],
    declarations: Iterable[Declaration],
    *,
    declared_weight: float = 1.0,
    contradiction_min_evidence: int = 5,
    limit: int = 20,
    volumes: Mapping[str, int] | None = None,
) -> dict[str, list[RankedSignal]]:
    """Ranked signals per dimension. ``volumes`` is the behavioural evidence of each dimension in
    all, when ``behaviour`` holds only its strongest values (and any declared ones); by default it
    is summed from ``behaviour``."""
    behaved: dict[str, dict[str, Behaviour]] = {}
    for seen_one in behaviour:
        behaved.setdefault(seen_one.dimension, {})[seen_one.value] = seen_one
    declared: dict[str, dict[str, Declaration]] = {}
    for said_one in declarations:
        latest = declared.setdefault(said_one.dimension, {}).get(said_one.value)
        if latest is None or said_one.declared_at > latest.declared_at:
            declared[said_one.dimension][said_one.value] = said_one

    ranked: dict[str, list[RankedSignal]] = {}
    for dimension in sorted(behaved.keys() | declared.keys()):
        seen = behaved.get(dimension, {})
        said = declared.get(dimension, {})
        volume = volumes.get(dimension, 0) if volumes is not None else sum(b.evidence for b in seen.values())
        # Behaviour first, by score, then value (built positionally: a view makes one per value).
        signals = sorted(
            (
                RankedSignal(value, b.score, BEHAVIOURAL, b.evidence, b.last_seen, False)
                if (d := said.get(value)) is None
                else RankedSignal(
                    value, b.score + declared_weight, BOTH, b.evidence, max(b.last_seen, d.declared_at), False
                )
                for value, b in seen.items()
            ),
            key=lambda s: (-s.score, s.value),
        )
        if len(signals) < limit:
            contradicted = volume >= contradiction_min_evidence
            signals += sorted(
                (
                    RankedSignal(value, declared_weight, DECLARED, 0, d.declared_at, contradicted)
                    for value, d in said.items()
                    if value not in seen
                ),
                key=lambda s: s.value,
            )
        ranked[dimension] = signals[:limit]
    return ranked
