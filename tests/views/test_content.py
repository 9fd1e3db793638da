"""What a personalised view holds: per dimension, values ranked behaviour over declaration and
recent over old, contradictions kept and marked, permitted preferences, the consent summary and
(on request) the latest permitted events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from profilestore.config import Settings
from profilestore.kit.time import utcnow
from tests.conftest import Keys
from tests.views.support import VIEW_PURPOSE, Store, days_ago, get_view, set_policy, values, view

HALF_LIFE_DAYS = 14.0


def _decayed(weight: float, occurred: datetime, now: datetime) -> float:
    return weight * 0.5 ** ((now - occurred).total_seconds() / (HALF_LIFE_DAYS * 86_400))


def _ranked(body: dict[str, Any], dimension: str = "category") -> dict[str, dict[str, Any]]:
    return {s["value"]: s for s in body["signals"][dimension]}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_recent_burst_outranks_a_larger_volume_from_a_year_ago(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    assert settings.signals.half_life_days == HALF_LIFE_DAYS
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    year_ago, today = days_ago(365), utcnow() - timedelta(minutes=5)
    ada.events(50, {"category": "Golf"}, occurred=year_ago)
    ada.events(5, {"category": "Tennis"}, occurred=today)

    body = view(api, keys, subject)
    now = utcnow()

    assert values(body) == ["tennis", "golf"]
    ranked = _ranked(body)
    assert ranked["tennis"]["tier"] == ranked["golf"]["tier"] == "behavioural"
    assert ranked["tennis"]["evidence"] == 5 and ranked["golf"]["evidence"] == 50
    weight = settings.signals.type_weights["product_viewed"]
    assert ranked["tennis"]["score"] == pytest.approx(5 * _decayed(weight, today, now), rel=1e-4)
    assert ranked["golf"]["score"] == pytest.approx(50 * _decayed(weight, year_ago, now), rel=1e-4)
    assert abs(_at(ranked["golf"]["last_seen"]) - year_ago) < timedelta(seconds=1)
    assert abs(_at(ranked["tennis"]["last_seen"]) - today) < timedelta(seconds=1)
    assert ranked["tennis"]["contradicted"] is ranked["golf"]["contradicted"] is False


def test_heavier_event_types_weigh_more_at_the_same_age(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(3, {"category": "Golf"}, type="page_viewed")  # weight 1 each
    ada.events(1, {"category": "Tennis"}, type="purchase")  # weight 8

    assert values(view(api, keys, subject)) == ["tennis", "golf"]


def test_declared_only_interests_rank_below_any_behavioural_value(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(1, {"category": "Chess"}, type="page_viewed", occurred=days_ago(200))  # weak and old
    ada.prefer("favourite_category", ["Tennis", "Golf"])

    body = view(api, keys, subject)

    ranked = _ranked(body)
    assert values(body) == ["chess", "golf", "tennis"]
    assert ranked["chess"]["tier"] == "behavioural"
    assert ranked["golf"]["tier"] == ranked["tennis"]["tier"] == "declared"
    assert ranked["chess"]["score"] < ranked["tennis"]["score"]  # outranks despite a far lower score
    assert ranked["tennis"]["evidence"] == 0


def test_a_value_declared_and_behaved_is_tier_both_and_outranks_behaviour_alone(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    declared_at = utcnow() - timedelta(minutes=1)
    ada.events(2, {"category": "  TENNIS "}, occurred=days_ago(3))
    ada.events(2, {"category": "Golf"}, occurred=days_ago(3))
    ada.prefer("favourite_category", "Tennis", declared_at=declared_at)

    ranked = _ranked(view(api, keys, subject))

    assert list(ranked) == ["tennis", "golf"]
    assert ranked["tennis"]["tier"] == "both"
    assert ranked["golf"]["tier"] == "behavioural"
    assert ranked["tennis"]["evidence"] == 2
    assert ranked["tennis"]["score"] == pytest.approx(ranked["golf"]["score"] + settings.views.declared_weight)
    assert abs(_at(ranked["tennis"]["last_seen"]) - declared_at) < timedelta(seconds=1)
    assert ranked["tennis"]["contradicted"] is False


def test_a_declared_value_contradicted_by_behaviour_is_kept_and_marked(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    enough = settings.views.contradiction_min_evidence
    ada = Store(api, keys, {"email": "ada@example.com"})
    ada_id = ada.consent({"personalize": "granted"})
    ada.prefer("favourite_category", "Golf")
    ada.events(enough, {"category": "Tennis"})
    bob = Store(api, keys, {"email": "bob@example.com"})
    bob_id = bob.consent({"personalize": "granted"})
    bob.prefer("favourite_category", "Golf")
    bob.events(enough - 1, {"category": "Tennis"})

    ada_view, bob_view = _ranked(view(api, keys, ada_id)), _ranked(view(api, keys, bob_id))

    assert list(ada_view) == list(bob_view) == ["tennis", "golf"]
    assert ada_view["golf"]["tier"] == "declared" and ada_view["golf"]["contradicted"] is True
    assert bob_view["golf"]["tier"] == "declared" and bob_view["golf"]["contradicted"] is False
    assert ada_view["tennis"]["contradicted"] is False


def test_behaviour_in_another_dimension_does_not_contradict_a_declaration(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.prefer("favourite_category", "Golf")
    ada.events(10, {"brand": "Acme"})

    body = view(api, keys, subject)

    assert _ranked(body)["golf"]["contradicted"] is False
    assert values(body, "brand") == ["acme"]


def test_brand_and_price_become_their_own_dimensions(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(2, {"category": "Shoes", "brand": "Acme", "price": 75})
    ada.events(1, {"product": {"category": "Socks", "brand": "Globex", "price": 10}})

    body = view(api, keys, subject)

    assert set(body["signals"]) == {"category", "brand", "price_band"}
    assert values(body) == ["shoes", "socks"]
    assert values(body, "brand") == ["acme", "globex"]
    assert values(body, "price_band") == ["50-100", "0-25"]


def test_permitted_preferences_and_the_consent_summary_are_listed(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    granted_at = utcnow() - timedelta(hours=2)
    subject = ada.consent({"personalize": "granted"}, at=granted_at)
    declared_at = utcnow() - timedelta(minutes=3)
    ada.prefer("favourite_category", "Golf", declared_at=declared_at)
    ada.prefer("preferred_channel", "sms", category="user.preferences.channel")

    body = view(api, keys, subject)

    prefs = {p["key"]: p for p in body["preferences"]}
    assert set(prefs) == {"favourite_category", "preferred_channel"}
    assert prefs["favourite_category"]["value"] == "Golf"
    assert prefs["favourite_category"]["category"] == "user.preferences.interests"
    assert prefs["favourite_category"]["source"] == "profile-page"
    assert abs(_at(prefs["favourite_category"]["declared_at"]) - declared_at) < timedelta(seconds=1)
    assert body["consent"]["in_force"] is True
    assert body["consent"]["basis"] == "granted"
    assert abs(_at(body["consent"]["granted_since"]) - granted_at) < timedelta(seconds=1)
    assert body["defaults"] == {}


def test_only_the_latest_declaration_of_a_preference_counts(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.prefer("favourite_category", "Golf", declared_at=utcnow() - timedelta(minutes=10))
    ada.prefer("favourite_category", "Tennis", declared_at=utcnow() - timedelta(minutes=5))

    body = view(api, keys, subject)

    assert values(body) == ["tennis"]
    assert [p["value"] for p in body["preferences"]] == ["Tennis"]


def _post_mixed(ada: Store, n: int) -> list[str]:
    """n events one minute apart, newest last; returns their labels newest first."""
    labels = []
    for i in range(n):
        ada.events(1, {"category": f"c{i}"}, occurred=utcnow() - timedelta(minutes=n - i))
        labels.append(f"c{i}")
    return labels[::-1]


def test_recent_events_are_newest_first_and_bounded_by_limit(api: TestClient, keys: Keys, settings: Settings) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    newest_first = _post_mixed(ada, settings.views.recent_events_default + 3)

    three = view(api, keys, subject, include="recent_events", limit=3)
    default = view(api, keys, subject, include="recent_events")
    without = view(api, keys, subject)

    assert [e["properties"]["category"] for e in three["recent_events"]] == newest_first[:3]
    assert [e["type"] for e in three["recent_events"]] == ["product_viewed"] * 3
    assert {e["category"] for e in three["recent_events"]} == {"user.behavior.browsing_history"}
    assert len(default["recent_events"]) == settings.views.recent_events_default
    assert without["recent_events"] is None
    posted = api.post(
        "/v1/views",
        headers=keys.header("reader"),
        json={"purpose": VIEW_PURPOSE, "subject_id": subject, "include": ["recent_events"]},
    )
    assert len(posted.json()["recent_events"]) == settings.views.recent_events_default


def test_recent_events_show_only_permitted_events(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted", "marketing": "granted"})
    ada.events(2, {"category": "Old"})
    ada.consent({"personalize": "withdrawn"})
    ada.consent({"personalize": "granted"})
    ada.events(1, {"category": "Browsed"}, type="page_viewed")
    ada.events(1, {"category": "Bought"}, type="purchase")
    set_policy(api, keys, VIEW_PURPOSE, ["user.behavior.purchase_history"])

    body = view(api, keys, subject, include="recent_events", limit=100)

    assert [(e["type"], e["properties"]) for e in body["recent_events"]] == [("purchase", {"category": "Bought"})]


def test_a_limit_outside_its_bounds_is_refused_and_the_largest_is_accepted(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(3, {"category": "Golf"})
    for limit in (0, settings.views.recent_events_max + 1):
        answer = get_view(api, keys.header("reader"), subject, include="recent_events", limit=limit)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["field"] == "limit"
    body = view(api, keys, subject, include="recent_events", limit=settings.views.recent_events_max)
    assert len(body["recent_events"]) == 3


def test_an_unknown_section_is_refused(api: TestClient, keys: Keys) -> None:
    subject = Store(api, keys).consent({"personalize": "granted"})
    by_id = get_view(api, keys.header("reader"), subject, include="everything")
    posted = api.post(
        "/v1/views",
        headers=keys.header("reader"),
        json={"purpose": VIEW_PURPOSE, "subject_id": subject, "include": ["recent_events", "everything"]},
    )
    for answer in (by_id, posted):
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["field"] == "include"
        assert "everything" in answer.json()["error"]["message"]
