"""Real Segment and RudderStack SDKs, pointed at a live server, change nothing else: consent from
the banner, identify, alias, events gated by consent. Headers the SDKs can't send (Sec-GPC) go
through httpx, still over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from segment.analytics.request import APIError as SegmentAPIError

from profilestore.events.service import decrypt_properties
from profilestore.runtime import Runtime
from tests.conftest import Keys, row_counts
from tests.events.support import (
    basic_auth,
    consent_context,
    consent_records,
    current_preferences,
    segment_message,
    stored_events,
    stored_signals,
)

PERSONALIZATION = consent_context(Personalization=True)


class Tracker(Protocol):
    """What both SDKs offer (their methods share names and keywords)."""

    def track(self, **kwargs: Any) -> Any: ...
    def identify(self, **kwargs: Any) -> Any: ...
    def alias(self, **kwargs: Any) -> Any: ...
    def page(self, **kwargs: Any) -> Any: ...
    def screen(self, **kwargs: Any) -> Any: ...


def _fail(error: Exception, batch: Any) -> None:
    raise AssertionError(f"the SDK reported an error: {error}")


SDKS: dict[str, Callable[[str, str], Tracker]] = {
    "segment": lambda key, url: SegmentClient(write_key=key, host=url, sync_mode=True, on_error=_fail),
    "segment-gzip": lambda key, url: SegmentClient(write_key=key, host=url, sync_mode=True, gzip=True, on_error=_fail),
    "rudderstack": lambda key, url: RudderClient(write_key=key, host=url, sync_mode=True, on_error=_fail),
}


@pytest.fixture
def http(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=10) as client:
        yield client


def _sdk(name: str, keys: Keys, live_url: str) -> Tracker:
    return SDKS[name](keys.collector, live_url)


def _subject_of(http: httpx.Client, keys: Keys, identifiers: dict[str, str]) -> str | None:
    found = http.post("/v1/subjects/resolve", headers=keys.header("privacy"), json={"identifiers": identifiers})
    assert found.status_code in (200, 404), found.text
    return str(found.json()["subject_id"]) if found.status_code == 200 else None


def _consents(http: httpx.Client, keys: Keys, subject_id: str) -> dict[str, Any]:
    answer = http.get(f"/v1/subjects/{subject_id}/consents", headers=keys.header("privacy"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("sdk", list(SDKS))
def test_track_with_banner_consent_creates_the_subject_records_consent_and_stores_the_event(
    sdk: str, keys: Keys, live_url: str, http: httpx.Client, runtime: Runtime
) -> None:
    client = _sdk(sdk, keys, live_url)
    properties = {"category": "Shoes", "brand": "Acme", "price": 42}

    client.track(anonymous_id="anon-e2e", event="Product Viewed", properties=properties, context=PERSONALIZATION)

    subject = _subject_of(http, keys, {"anonymous_id": "anon-e2e"})
    assert subject is not None
    consents = _consents(http, keys, subject)
    assert [(s["purpose"], s["status"]) for s in consents["state"]] == [("personalize", "granted")]
    assert [(r["purpose"], r["status"], r["source"]) for r in consents["history"]] == [
        ("personalize", "granted", "segment")
    ]
    [stored] = stored_events(runtime, subject)
    assert (stored.type, stored.category) == ("product_viewed", "user.behavior.browsing_history")
    assert decrypt_properties(runtime.vault.cipher(subject), stored.event_id, bytes(stored.properties_ct)) == properties
    assert {s.dimension for s in stored_signals(runtime, subject)} == {"category", "brand", "price_band"}


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_an_event_given_a_past_timestamp_is_stored_at_it(sdk: str, keys: Keys, live_url: str, runtime: Runtime) -> None:
    """The SDKs stamp the batch's ``sentAt`` from the same clock as the event's time, so the
    correction for clock skew moves an imported event only by the time the batch took to reach
    us: its stored time is its own, give or take that."""
    client = _sdk(sdk, keys, live_url)
    happened = datetime.now(UTC) - timedelta(days=3)

    client.track(user_id="u-1", event="Signed In", context=PERSONALIZATION, timestamp=happened)

    [stored] = stored_events(runtime)
    assert happened <= stored.occurred_at <= happened + timedelta(seconds=5)


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_page_and_screen_calls_become_events(sdk: str, keys: Keys, live_url: str, runtime: Runtime) -> None:
    client = _sdk(sdk, keys, live_url)
    client.track(user_id="u-1", event="Signed In", context=PERSONALIZATION)

    client.page(user_id="u-1", name="Home", properties={"url": "https://shop.example/"})
    client.screen(user_id="u-1", name="Basket")

    assert sorted(e.type for e in stored_events(runtime)) == ["page_viewed", "screen_viewed", "signed_in"]


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_identify_links_the_email_trait_and_keeps_the_mapped_preference(
    sdk: str, keys: Keys, live_url: str, http: httpx.Client, runtime: Runtime
) -> None:
    client = _sdk(sdk, keys, live_url)
    client.track(anonymous_id="anon-e2e", event="Product Viewed", context=PERSONALIZATION)

    client.identify(
        user_id="user-42",
        anonymous_id="anon-e2e",
        traits={"email": "Ada@Example.com", "favourite_brand": "Acme", "name": "Ada"},
    )

    subject = _subject_of(http, keys, {"anonymous_id": "anon-e2e"})
    assert subject is not None
    assert _subject_of(http, keys, {"email": "ada@example.com"}) == subject
    assert _subject_of(http, keys, {"user_id": "user-42"}) == subject
    assert current_preferences(runtime, subject) == {
        "favourite_brand": ("Acme", "user.preferences.interests", "segment")
    }


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_alias_merges_two_subjects_into_one(
    sdk: str, keys: Keys, live_url: str, http: httpx.Client, runtime: Runtime
) -> None:
    client = _sdk(sdk, keys, live_url)
    client.track(
        anonymous_id="cookie-1", event="Product Viewed", properties={"category": "Shoes"}, context=PERSONALIZATION
    )
    client.track(user_id="user-9", event="Product Viewed", properties={"category": "Hats"}, context=PERSONALIZATION)
    before = {_subject_of(http, keys, {"anonymous_id": "cookie-1"}), _subject_of(http, keys, {"user_id": "user-9"})}
    assert len(before) == 2 and None not in before

    client.alias(previous_id="cookie-1", user_id="user-9")

    survivor = _subject_of(http, keys, {"user_id": "user-9"})
    assert _subject_of(http, keys, {"anonymous_id": "cookie-1"}) == survivor
    assert survivor in before
    assert len(stored_events(runtime, survivor)) == 2
    assert len(stored_signals(runtime, survivor)) == 2
    assert {r["subject_id"] for r in _consents(http, keys, str(survivor))["history"]} == before


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_track_without_any_consent_is_dropped(sdk: str, keys: Keys, live_url: str, runtime: Runtime) -> None:
    client = _sdk(sdk, keys, live_url)
    before = row_counts(runtime)

    client.track(anonymous_id="stranger", event="Product Viewed", properties={"category": "Shoes"})
    client.identify(anonymous_id="stranger", traits={"email": "stranger@example.com", "favourite_brand": "Acme"})

    assert row_counts(runtime) == before


def test_the_sdk_sees_an_error_for_a_wrong_write_key(keys: Keys, live_url: str, runtime: Runtime) -> None:
    client = SegmentClient(write_key="psk_wrong", host=live_url, sync_mode=True, on_error=_fail)

    with pytest.raises(SegmentAPIError) as raised:
        client.track(anonymous_id="anon-e2e", event="Product Viewed", context=PERSONALIZATION)

    assert raised.value.status == 401
    assert stored_events(runtime) == []


def test_sec_gpc_withdraws_sale_and_targeted_advertising_once(keys: Keys, http: httpx.Client, runtime: Runtime) -> None:
    write_key = basic_auth(keys.collector)
    gpc = {**write_key, "Sec-GPC": "1"}
    message = segment_message(anonymousId="gpc-visitor", context=PERSONALIZATION)

    first = http.post("/v1/track", headers=gpc, json=message)

    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1
    subject = _subject_of(http, keys, {"anonymous_id": "gpc-visitor"})
    assert subject is not None
    history = [(r["purpose"], r["status"], r["source"]) for r in _consents(http, keys, subject)["history"]]
    gpc_withdrawals = {p for p, s, source in history if source == "gpc" and s == "withdrawn"}
    assert gpc_withdrawals == set(runtime.settings.gpc_purposes)
    assert ("personalize", "granted", "segment") in history
    recorded = len(consent_records(runtime))

    again = http.post("/v1/batch", headers=gpc, json={"batch": [segment_message(anonymousId="gpc-visitor")]})
    plain = http.post("/v1/track", headers=write_key, json=segment_message(anonymousId="gpc-visitor"))

    assert again.status_code == plain.status_code == 200
    assert again.json()["accepted"] == plain.json()["accepted"] == 1
    assert len(consent_records(runtime)) == recorded  # the signal is already honoured: nothing new


def test_concurrent_deliveries_of_the_same_batch_store_each_event_once(
    keys: Keys, live_url: str, runtime: Runtime
) -> None:
    """SDKs retry on timeouts, so the same batch can arrive twice at once on two server threads."""
    with httpx.Client(base_url=live_url, timeout=30) as http:
        grant_answer = http.post(
            "/v1/track",
            headers=keys.header("collector"),
            json=segment_message(anonymousId="racer", context=PERSONALIZATION),
        )
        assert grant_answer.status_code == 200, grant_answer.text
    batch = {"batch": [segment_message(anonymousId="racer", messageId=f"race-{i}") for i in range(20)]}
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    start = threading.Barrier(6)

    def deliver() -> None:
        with httpx.Client(base_url=live_url, timeout=30) as http:
            start.wait()
            answer = http.post("/v1/batch", headers=keys.header("collector"), json=batch)
            if answer.status_code == 200:
                answers.append(answer.json())
            else:
                failures.append(f"{answer.status_code} {answer.text}")

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert sum(a["accepted"] for a in answers) == 20
    assert sum(a["duplicates"] for a in answers) == 5 * 20
    racing = [e for e in stored_events(runtime) if e.message_id.startswith("race-")]
    assert len(racing) == 20
    [signal] = stored_signals(runtime)
    assert signal.evidence == 21  # the consent-carrying track plus each raced event once
