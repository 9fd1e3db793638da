"""Plain values shared by signals and the views that rank them."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class Behaviour(NamedTuple):
    """A permitted behavioural signal: summed across buckets, decayed to the time of reading.
    (A named tuple: a view makes one per value it returns, and a frozen dataclass costs three
    times as much to make.)"""

    dimension: str
    value: str
    score: float
    evidence: int
    last_seen: datetime
