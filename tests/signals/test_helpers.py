"""The pure pieces signals are made of: decay, value normalisation, price bands, extraction."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from profilestore.config import SignalSettings
from profilestore.signals.evidence import MAX_VALUE_LENGTH, Extractor, decay, normalise_value, price_band

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BANDS = [25.0, 50.0, 100.0, 250.0]


# -- decay -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_days", "half_life", "factor"),
    [(0, 14, 1.0), (14, 14, 0.5), (28, 14, 0.25), (7, 14, 2**-0.5), (1, 1, 0.5), (3.5, 7, 2**-0.5)],
)
def test_decay_halves_a_score_every_half_life(age_days: float, half_life: float, factor: float) -> None:
    assert decay(10.0, T0, T0 + timedelta(days=age_days), half_life) == pytest.approx(10.0 * factor, rel=1e-12)


def test_decay_to_an_earlier_time_grows_the_score_back() -> None:
    later = decay(8.0, T0, T0 + timedelta(days=14), 14)
    assert later == pytest.approx(4.0)
    assert decay(later, T0 + timedelta(days=14), T0, 14) == pytest.approx(8.0)


def test_decay_composes_so_scores_can_be_moved_in_steps() -> None:
    step = decay(decay(5.0, T0, T0 + timedelta(days=3), 14), T0 + timedelta(days=3), T0 + timedelta(days=10), 14)
    assert step == pytest.approx(decay(5.0, T0, T0 + timedelta(days=10), 14), rel=1e-12)


def test_decay_works_at_sub_second_resolution() -> None:
    assert decay(1.0, T0, T0 + timedelta(seconds=1), 1) == pytest.approx(2 ** (-1 / 86_400), rel=1e-12)


# -- normalise_value --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Shoes", "shoes"),
        (" shoes ", "shoes"),
        ("SHOES", "shoes"),
        ("Trail  Running\tShoes\n", "trail running shoes"),
        ("Straße", "strasse"),  # casefold, not just lower
        (42, "42"),
        (4.5, "4.5"),
    ],
)
def test_normalise_value_ignores_case_and_spacing(raw: Any, expected: str) -> None:
    assert normalise_value(raw) == expected


@pytest.mark.parametrize("raw", [None, True, False, "", "   ", {"a": 1}, ["shoes"], b"shoes"])
def test_normalise_value_refuses_blanks_and_non_text(raw: Any) -> None:
    assert normalise_value(raw) is None


def test_normalise_value_truncates_long_values() -> None:
    value = normalise_value("A" * (MAX_VALUE_LENGTH + 50))
    assert value == "a" * MAX_VALUE_LENGTH


# -- price_band ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "band"),
    [
        (0, "0-25"),
        (24.99, "0-25"),
        (25, "25-50"),
        (42, "25-50"),
        (49.5, "25-50"),
        (50, "50-100"),
        (99.99, "50-100"),
        (100, "100-250"),
        (249, "100-250"),
        (250, "250+"),
        (10_000, "250+"),
    ],
)
def test_price_band_labels_the_band_a_price_falls_in(price: float, band: str) -> None:
    assert price_band(price, BANDS) == band


@pytest.mark.parametrize("price", [-1, -0.01, True, None, "cheap", math.nan, math.inf])
def test_price_band_refuses_what_is_not_a_price(price: Any) -> None:
    assert price_band(price, BANDS) is None


def test_price_band_uses_the_configured_bands() -> None:
    assert price_band(7.5, [5.0, 10.0]) == "5-10"
    assert price_band(12, [5.0, 10.0]) == "10+"
    assert price_band(12, [12.5]) == "0-12.5"


# -- extract ---------------------------------------------------------------------------------------

DEFAULTS = SignalSettings()


def extract(properties: dict[str, Any], settings: SignalSettings = DEFAULTS) -> list[tuple[str, str]]:
    return Extractor(settings)(properties)


def test_extract_reads_every_configured_dimension() -> None:
    found = extract({"category": "Shoes", "brand": " ACME ", "channel": "Web", "price": 42, "sku": "X1"})
    assert sorted(found) == [("brand", "acme"), ("category", "shoes"), ("channel", "web"), ("price_band", "25-50")]


def test_extract_reaches_into_nested_objects() -> None:
    found = extract({"product": {"category": "Hats", "brand": "Acme", "price": 120}})
    assert sorted(found) == [("brand", "acme"), ("category", "hats"), ("price_band", "100-250")]


def test_extract_takes_the_first_configured_path_that_is_present() -> None:
    found = extract({"category": "Shoes", "product": {"category": "Hats"}, "price": 10, "value": 500})
    assert sorted(found) == [("category", "shoes"), ("price_band", "0-25")]


def test_extract_spreads_a_list_into_distinct_normalised_values() -> None:
    found = extract({"categories": ["Shoes", " shoes", "Hats", None, {"x": 1}]})
    assert sorted(found) == [("category", "hats"), ("category", "shoes")]


def test_extract_finds_nothing_in_unmapped_or_unusable_properties() -> None:
    assert extract({}) == []
    assert extract({"sku": "X1", "colour": "red"}) == []
    assert extract({"brand": "   ", "price": "expensive", "channel": True}) == []


def test_extract_follows_a_custom_mapping() -> None:
    custom = SignalSettings(event_dimensions={"colour": ["colour", "item.colour"]})
    assert extract({"item": {"colour": "Red"}, "category": "Shoes"}, custom) == [("colour", "red")]
