"""Plain values shared by signals and the views that rank them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Behaviour:
    """A permitted behavioural signal: summed across buckets, decayed to the time of reading."""

    dimension: str
    value: str
    score: float
    evidence: int
    last_seen: datetime
