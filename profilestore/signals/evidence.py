"""What an event says to signals: the (dimension, value) pairs its properties speak to, by the
configured mapping, each value's keyed index, and its recency-decayed weight. No database."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from profilestore.config import SignalSettings
from profilestore.crypto.service import Vault

MAX_VALUE_LENGTH = 200
DAY = 86_400.0


def decay(score: float, since: datetime, until: datetime, half_life_days: float) -> float:
    """``score`` held at ``since``, decayed to ``until`` (grows if ``until`` is earlier)."""
    return score * 2.0 ** (-(until - since).total_seconds() / (half_life_days * DAY))


def normalise_value(value: Any) -> str | None:
    """Signal values compare case- and space-insensitively; blanks and non-text are not signals."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text_value = " ".join(str(value).split()).casefold()
    return text_value[:MAX_VALUE_LENGTH] or None


def price_band(price: Any, bands: list[float]) -> str | None:
    if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
        return None
    lower = 0.0
    for upper in bands:
        if price < upper:
            return f"{lower:g}-{upper:g}"
        lower = upper
    return f"{lower:g}+"


def _lookup(properties: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    current: Any = properties
    for part in path:
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


class Extractor:
    """The configured mapping from event properties to (dimension, value) pairs, prepared once
    for a batch; a text value met again is normalised once."""

    def __init__(self, settings: SignalSettings) -> None:
        self._paths = [
            (dimension, [tuple(path.split(".")) for path in paths])
            for dimension, paths in settings.event_dimensions.items()
        ]
        self._bands = settings.price_bands
        self._normalised: dict[str, str | None] = {}

    def _normalise(self, raw: Any) -> str | None:
        if type(raw) is not str:
            return normalise_value(raw)
        found = self._normalised.get(raw, "")
        if found == "":
            found = self._normalised[raw] = normalise_value(raw)
        return found

    def __call__(self, properties: Mapping[str, Any]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for dimension, paths in self._paths:
            for path in paths:
                raw = _lookup(properties, path)
                if raw is None:
                    continue
                if dimension == "price_band":
                    band = price_band(raw, self._bands)
                    if band:
                        found.append((dimension, band))
                else:
                    values = raw if isinstance(raw, list) else [raw]
                    found.extend((dimension, v) for v in {self._normalise(x) for x in values[:20]} if v)
                break
        return found


def value_index(vault: Vault, dimension: str, value: str) -> bytes:
    return vault.blind_index(f"signal:{dimension}", value)


@dataclass(frozen=True)
class Evidence:
    """What one event says, worked out before its subject is known: its weight decayed to the
    batch's reference time, and the (dimension, value index, value) triples it speaks to."""

    contribution: float
    occurred_at: datetime
    values: tuple[tuple[str, bytes, str], ...]


class EvidenceReader:
    """Turns events into ``Evidence``; a value seen again in the same batch is hashed once."""

    def __init__(self, vault: Vault, settings: SignalSettings, now: datetime) -> None:
        self._vault = vault
        self._settings = settings
        self._now = now
        self._extract = Extractor(settings)
        self._indexes: dict[tuple[str, str], bytes] = {}

    def read(self, event_type: str, occurred_at: datetime, properties: Mapping[str, Any]) -> Evidence:
        settings = self._settings
        weight = settings.type_weights.get(event_type, settings.default_weight)
        values = []
        for dimension, value in self._extract(properties):
            index = self._indexes.get((dimension, value))
            if index is None:
                index = self._indexes[(dimension, value)] = value_index(self._vault, dimension, value)
            values.append((dimension, index, value))
        contribution = decay(weight, occurred_at, self._now, settings.half_life_days)
        return Evidence(contribution, occurred_at, tuple(values))
