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
from typing import NamedTuple

from profilestore.signals.types import Behaviour

BEHAVIOURAL, DECLARED, BOTH = "behavioural", "declared", "both"


@dataclass(frozen=True)
class Declaration:
    dimension: str
    value: str
    declared_at: datetime


class RankedSignal(NamedTuple):  # one per value a view returns: cheap to make
    value: str
    score: float
    tier: str
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
    for dimension in sorted(set(behaved) | set(declared)):
        seen = behaved.get(dimension, {})
        said = declared.get(dimension, {})
        volume = volumes.get(dimension, 0) if volumes is not None else sum(b.evidence for b in seen.values())
        signals = []
        for value in set(seen) | set(said):
            b, d = seen.get(value), said.get(value)
            if b is not None:
                signals.append(
                    RankedSignal(
                        value=value,
                        score=b.score + (declared_weight if d else 0.0),
                        tier=BOTH if d else BEHAVIOURAL,
                        evidence=b.evidence,
                        last_seen=max(b.last_seen, d.declared_at) if d else b.last_seen,
                        contradicted=False,
                    )
                )
            elif d is not None:
                signals.append(
                    RankedSignal(
                        value=value,
                        score=declared_weight,
                        tier=DECLARED,
                        evidence=0,
                        last_seen=d.declared_at,
                        contradicted=volume >= contradiction_min_evidence,
                    )
                )
        signals.sort(key=lambda s: (s.tier == DECLARED, -s.score, s.value))
        ranked[dimension] = signals[:limit]
    return ranked
