"""The Segment Tracking API through HTTP (ASGI): auth, bodies, limits, validation, consent riding
along with events, identify traits. Real SDKs against a live server are in tests/e2e."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from profilestore.audit.models import AccessLogEntry
from profilestore.runtime import Runtime
from tests.conftest import Keys, row_counts
from tests.events.support import (
    basic_auth,
    consent_context,
    consent_records,
    current_preferences,
    grant,
    iso,
    segment_message,
    stored_events,
)
from tests.views.support import set_policy

PERSONALIZATION = consent_context(Personalization=True)


def _batch(api: TestClient, key: str, messages: list[dict[str, Any]], **extra: Any) -> Any:
    return api.post("/v1/batch", headers=basic_auth(key), json={"batch": messages, **extra})


def _gzipped(api: TestClient, path: str, key: str, payload: Any) -> Any:
    body = gzip.compress(json.dumps(payload).encode())
    headers = {**basic_auth(key), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    return api.post(path, headers=headers, content=body)


def _subject_of(api: TestClient, keys: Keys, identifiers: dict[str, str]) -> str | None:
    found = api.post("/v1/subjects/resolve", headers=keys.header("privacy"), json={"identifiers": identifiers})
    return str(found.json()["subject_id"]) if found.status_code == 200 else None


# -- auth ------------------------------------------------------------------------------------------


def test_the_write_key_as_basic_user_with_an_empty_password_is_accepted(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    answer = _batch(api, keys.collector, [segment_message(context=PERSONALIZATION)])

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "accepted": 1, "duplicates": 0, "dropped": {}}
    assert len(stored_events(runtime)) == 1


def test_a_bearer_key_is_accepted_on_segment_routes_too(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    answer = api.post("/v1/track", headers=keys.header("collector"), json=segment_message(context=PERSONALIZATION))

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1


def test_segment_calls_without_a_valid_write_key_get_401_and_write_nothing(api: TestClient, runtime: Runtime) -> None:
    before = row_counts(runtime)
    body = {"batch": [segment_message(context=PERSONALIZATION)]}

    for authorization in (None, "Basic d3Jvbmc6", "Basic !!!not-base64!!!", "Bearer psk_wrong", "Token abc"):
        headers = {"Authorization": authorization} if authorization else {}
        answer = api.post("/v1/batch", headers=headers, json=body)
        assert answer.status_code == 401, authorization
        assert answer.json()["error"]["code"] == "unauthenticated"
    assert row_counts(runtime) == before


def test_a_reader_key_as_write_key_gets_403(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)

    answer = _batch(api, keys.reader, [segment_message(context=PERSONALIZATION)])

    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    assert row_counts(runtime) == before


# -- bodies and limits -----------------------------------------------------------------------------


def test_gzipped_batches_and_single_calls_are_accepted(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    batch = _gzipped(api, "/v1/batch", keys.collector, {"batch": [segment_message(context=PERSONALIZATION)]})
    single = _gzipped(api, "/v1/track", keys.collector, segment_message(context=PERSONALIZATION))

    for answer in (batch, single):
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 1
    assert len(stored_events(runtime)) == 2


def test_a_corrupt_gzip_or_non_json_body_is_refused_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    good = gzip.compress(json.dumps({"batch": [segment_message(context=PERSONALIZATION)]}).encode())
    before = row_counts(runtime)
    plain = {**basic_auth(keys.collector), "Content-Type": "application/json"}
    gzipped = {**plain, "Content-Encoding": "gzip"}

    for headers, corrupt in (
        (gzipped, b"definitely not gzip"),
        (gzipped, good[:10] + b"\x00" * 20 + good[30:]),
        (plain, b"{batch: ["),
    ):
        answer = api.post("/v1/batch", headers=headers, content=corrupt)
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.json()["error"]["field"] == "body"
    assert row_counts(runtime) == before


def test_a_batch_over_500_kb_is_refused_with_413(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    limit = runtime.settings.events.segment_max_batch_bytes
    pad = "x" * 30_000
    messages = [segment_message(context=PERSONALIZATION, properties={"pad": pad}) for _ in range(limit // len(pad) + 2)]
    before = row_counts(runtime)

    answer = _batch(api, keys.collector, messages)

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert row_counts(runtime) == before


def test_a_gzipped_batch_that_inflates_past_500_kb_is_refused_with_413(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    limit = runtime.settings.events.segment_max_batch_bytes
    pad = "y" * 30_000
    payload = {"batch": [segment_message(properties={"pad": pad}) for _ in range(limit // len(pad) + 2)]}
    assert len(gzip.compress(json.dumps(payload).encode())) < limit // 10
    before = row_counts(runtime)

    answer = _gzipped(api, "/v1/batch", keys.collector, payload)

    assert answer.status_code == 413
    assert answer.json()["error"]["field"] == "body"
    assert row_counts(runtime) == before


def test_a_single_call_over_32_kb_is_refused_with_413_plain_or_gzipped(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    message = segment_message(context=PERSONALIZATION, properties={"pad": "z" * 33_000})
    before = row_counts(runtime)

    plain = api.post("/v1/track", headers=basic_auth(keys.collector), json=message)
    gzipped = _gzipped(api, "/v1/track", keys.collector, message)

    assert (plain.status_code, gzipped.status_code) == (413, 413)
    assert row_counts(runtime) == before


def test_one_message_over_32_kb_inside_a_batch_is_refused_naming_it(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    messages = [segment_message(context=PERSONALIZATION), segment_message(properties={"pad": "p" * 33_000})]
    before = row_counts(runtime)

    answer = _batch(api, keys.collector, messages)

    assert answer.status_code == 413
    assert answer.json()["error"]["field"] == "batch.1.properties"
    assert row_counts(runtime) == before


# -- validation ------------------------------------------------------------------------------------

BAD_MESSAGES: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (second message of the batch, field, words in the message)
    "timestamp without zone": (segment_message(timestamp="2026-01-15T10:00:00"), "batch.1.timestamp", "time zone"),
    "originalTimestamp without zone": (
        segment_message(originalTimestamp="2026-01-15T10:00:00"),
        "batch.1.originalTimestamp",
        "time zone",
    ),
    "sentAt without zone": (segment_message(sentAt="2026-01-15T10:00:00"), "batch.1.sentAt", "time zone"),
    "sentAt not a time": (segment_message(sentAt="yesterday"), "batch.1.sentAt", "datetime"),
    # Corrected by sentAt, these would fall off the calendar (found by schemathesis: a 500).
    "sentAt three thousand years after the stamp": (
        segment_message(timestamp="1000-01-01T00:00:00Z", sentAt="4026-01-01T00:00:00Z"),
        "batch.1.sentAt",
        "too far from now",
    ),
    "identify stamped at the calendar's end, sent long ago": (
        segment_message("identify", userId="u-9", timestamp="9999-12-30T00:00:00Z", sentAt="2000-01-01T00:00:00Z"),
        "batch.1.sentAt",
        "too far from now",
    ),
    "track without event": (segment_message(event=None), "batch.1.event", "event name"),
    "track with a blank event": (segment_message(event="   "), "batch.1.event", "event name"),
    "neither userId nor anonymousId": (segment_message(anonymousId=None), "batch.1.userId", "userid or an anonymousid"),
    "unknown message type": (segment_message("purchase"), "batch.1.type", ""),
    "alias without previousId": (
        segment_message("alias", userId="u-1", anonymousId=None),
        "batch.1.previousId",
        "previousid",
    ),
    "malformed email trait": (
        segment_message("identify", traits={"email": "not-an-email"}),
        "batch.1.identifiers.email",
        "email",
    ),
    "properties not an object": (segment_message(properties=["Shoes"]), "batch.1.properties", "dictionary"),
}


def test_a_malformed_message_fails_its_whole_batch_naming_the_field(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Each bad message follows one that carries consent, which must not be applied either. One
    store for all cases; every mismatch is reported."""
    before = row_counts(runtime)
    mismatches = []

    for case, (bad, field, words) in BAD_MESSAGES.items():
        answer = _batch(api, keys.collector, [segment_message(context=PERSONALIZATION), bad])
        error = answer.json().get("error") or {}
        got = (answer.status_code, error.get("field"), words in str(error.get("message", "")).lower())
        if got != (422, field, True) or "not-an-email" in answer.text:
            mismatches.append(f"{case}: expected 422 on {field} saying '{words}', got {answer.text}")
        if row_counts(runtime) != before:
            mismatches.append(f"{case}: wrote rows")
            before = row_counts(runtime)
    empty = _batch(api, keys.collector, [])
    if (empty.status_code, empty.json()["error"]["field"]) != (422, "batch"):
        mismatches.append(f"empty batch: expected 422 on batch, got {empty.text}")
    naive = _batch(api, keys.collector, [segment_message(context=PERSONALIZATION)], sentAt="2026-01-15T10:00:00")
    if (naive.status_code, naive.json()["error"]["field"]) != (422, "sentAt") or row_counts(runtime) != before:
        mismatches.append(f"batch sentAt without zone: expected 422 on sentAt writing nothing, got {naive.text}")

    assert mismatches == []


def test_a_single_track_call_without_event_is_refused(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)

    answer = api.post("/v1/track", headers=basic_auth(keys.collector), json=segment_message(event=None))

    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "batch.0.event"
    assert row_counts(runtime) == before


# -- events ----------------------------------------------------------------------------------------


def test_track_page_and_screen_become_snake_case_events_with_default_categories(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    answer = _batch(
        api,
        keys.collector,
        [
            segment_message(context=PERSONALIZATION, event="Product Viewed"),
            segment_message(event="Order Completed", properties={"value": 42}),
            segment_message("page", name="Home", properties={"url": "https://shop.example/"}),
            segment_message("screen", name="Basket"),
        ],
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 4
    assert sorted((e.type, e.category) for e in stored_events(runtime)) == [
        ("order_completed", "user.behavior.purchase_history"),
        ("page_viewed", "user.behavior.browsing_history"),
        ("product_viewed", "user.behavior.browsing_history"),
        ("screen_viewed", "user.behavior.browsing_history"),
    ]


def test_a_resent_segment_message_id_is_a_duplicate(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    first = _batch(api, keys.collector, [segment_message(context=PERSONALIZATION, messageId="seg-1")])
    again = _batch(api, keys.collector, [segment_message(context=PERSONALIZATION, messageId="seg-1")])

    assert first.json()["accepted"] == 1
    assert again.json() == {"success": True, "accepted": 0, "duplicates": 1, "dropped": {}}
    assert len(stored_events(runtime)) == 1


def test_track_without_any_consent_is_dropped_and_creates_nobody(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)

    answer = _batch(api, keys.collector, [segment_message(), segment_message("page", name="Home")])

    assert answer.status_code == 200
    assert answer.json() == {"success": True, "accepted": 0, "duplicates": 0, "dropped": {"no_consent": 2}}
    assert row_counts(runtime) == before


def test_a_banner_withdrawal_sent_with_an_event_stops_that_event(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(
        api, keys, {"anonymous_id": "anon-seg-1"}, {"personalize": "granted"}, at=datetime.now(UTC) - timedelta(hours=1)
    )

    answer = _batch(api, keys.collector, [segment_message(context=consent_context(Personalization=False))])

    assert answer.json()["dropped"] == {"no_consent": 1}
    assert stored_events(runtime) == []
    assert [(r.purpose, r.status, r.source) for r in consent_records(runtime)][-1] == (
        "personalize",
        "withdrawn",
        "segment",
    )


def test_a_banner_state_resent_with_every_event_records_consent_once(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    banner = consent_context(Personalization=True, Analytics=False)
    _batch(api, keys.collector, [segment_message(context=banner)])
    recorded = [(r.purpose, r.status, r.source) for r in consent_records(runtime)]
    assert sorted(recorded) == [("analytics", "withdrawn", "segment"), ("personalize", "granted", "segment")]

    for _ in range(3):
        answer = _batch(api, keys.collector, [segment_message(context=banner), segment_message(context=banner)])
        assert answer.json()["accepted"] == 2
    assert len(consent_records(runtime)) == 2

    changed = _batch(
        api, keys.collector, [segment_message(context=consent_context(Personalization=True, Analytics=True))]
    )
    assert changed.status_code == 200
    assert [(r.purpose, r.status) for r in consent_records(runtime)][2:] == [("analytics", "granted")]
    assert len(stored_events(runtime)) == 8
    # Each change signalled with events is in the access log too, as a form's would be.
    with runtime.db.engine.connect() as conn:
        logged = conn.execute(
            select(AccessLogEntry.detail).where(AccessLogEntry.action == "consent.record").order_by(AccessLogEntry.seq)
        )
        assert [detail["records"] for (detail,) in logged] == [2, 1]


def test_a_banner_still_saying_yes_after_the_grant_expired_renews_it(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    set_policy(api, keys, "personalize", ["user.behavior", "user.preferences"], consent_valid_days=1)
    two_days_ago = iso(datetime.now(UTC) - timedelta(days=2))
    _batch(api, keys.collector, [segment_message(context=PERSONALIZATION, timestamp=two_days_ago)])
    assert [(r.purpose, r.status) for r in consent_records(runtime)] == [("personalize", "granted")]

    answer = _batch(api, keys.collector, [segment_message(context=PERSONALIZATION)])

    assert answer.json()["accepted"] == 1, answer.text  # the renewed grant lets the event in
    assert [(r.purpose, r.status) for r in consent_records(runtime)] == [("personalize", "granted")] * 2


def test_batch_level_context_applies_to_messages_without_their_own(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    message = segment_message()
    del message["context"]

    answer = _batch(api, keys.collector, [message], context=PERSONALIZATION)

    assert answer.json()["accepted"] == 1
    assert [(r.purpose, r.status) for r in consent_records(runtime)] == [("personalize", "granted")]


def test_group_is_accepted_and_writes_nothing(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    _batch(api, keys.collector, [segment_message(context=PERSONALIZATION)])
    before = row_counts(runtime)

    single = api.post(
        "/v1/group",
        headers=basic_auth(keys.collector),
        json=segment_message("group", groupId="acme-inc", traits={"name": "Acme Inc", "employees": 500}),
    )
    batched = _batch(api, keys.collector, [segment_message("group", groupId="acme-inc", traits={"plan": "gold"})])

    for answer in (single, batched):
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"success": True, "accepted": 0, "duplicates": 0, "dropped": {}}
    assert row_counts(runtime) == before


# -- identify --------------------------------------------------------------------------------------


def test_identify_traits_become_preferences_when_consent_covers_user_preferences(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    _batch(api, keys.collector, [segment_message(context=PERSONALIZATION)])

    answer = _batch(
        api,
        keys.collector,
        [
            segment_message(
                "identify",
                userId="user-42",
                traits={
                    "email": "ada@example.com",
                    "favourite_brand": "Acme",
                    "preferred_channel": "email",
                    "shoe_size": 38,
                    "plan": "gold",  # not mapped: not a preference
                },
            )
        ],
    )

    assert answer.status_code == 200, answer.text
    subject = _subject_of(api, keys, {"anonymous_id": "anon-seg-1"})
    assert subject is not None
    assert _subject_of(api, keys, {"email": "ada@example.com"}) == subject
    assert _subject_of(api, keys, {"user_id": "user-42"}) == subject
    assert current_preferences(runtime, subject) == {
        "favourite_brand": ("Acme", "user.preferences.interests", "segment"),
        "preferred_channel": ("email", "user.preferences.channel", "segment"),
        "shoe_size": (38, "user.preferences.size", "segment"),
    }


def test_identify_traits_are_not_kept_when_no_purpose_in_force_covers_user_preferences(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    _batch(api, keys.collector, [segment_message(context=consent_context(Analytics=True))])

    answer = _batch(api, keys.collector, [segment_message("identify", traits={"favourite_brand": "Acme"})])

    assert answer.status_code == 200, answer.text
    subject = _subject_of(api, keys, {"anonymous_id": "anon-seg-1"})
    assert subject is not None
    assert current_preferences(runtime, subject) == {}
    assert row_counts(runtime)["preferences"] == 0


def test_identify_traits_of_a_restricted_subject_are_not_kept(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    _batch(api, keys.collector, [segment_message(context=PERSONALIZATION)])
    subject = _subject_of(api, keys, {"anonymous_id": "anon-seg-1"})
    with runtime.db.transaction() as session:
        session.execute(text("UPDATE subjects SET status = 'restricted' WHERE id = :id"), {"id": subject})

    answer = _batch(api, keys.collector, [segment_message("identify", traits={"favourite_brand": "Acme"})])

    assert answer.status_code == 200, answer.text
    assert row_counts(runtime)["preferences"] == 0


def test_identify_for_someone_without_consent_creates_nobody(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)

    answer = _batch(
        api,
        keys.collector,
        [segment_message("identify", userId="u-1", traits={"email": "x@example.com", "favourite_brand": "Acme"})],
    )

    assert answer.status_code == 200
    assert row_counts(runtime) == before


def test_identify_with_consent_in_its_context_creates_the_person_with_preferences(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    answer = _batch(
        api,
        keys.collector,
        [
            segment_message(
                "identify",
                userId="u-7",
                traits={"email": "eve@example.com", "favourite_category": "Hiking"},
                context=PERSONALIZATION,
            )
        ],
    )

    assert answer.status_code == 200, answer.text
    subject = _subject_of(api, keys, {"email": "eve@example.com"})
    assert subject is not None
    assert current_preferences(runtime, subject) == {
        "favourite_category": ("Hiking", "user.preferences.interests", "segment")
    }


def test_consent_collected_at_uses_the_message_timestamp_but_never_the_future(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=5)
    _batch(api, keys.collector, [segment_message(context=PERSONALIZATION, timestamp=iso(earlier))])
    _batch(
        api,
        keys.collector,
        [
            segment_message(
                anonymousId="anon-2",
                context=PERSONALIZATION,
                timestamp=iso(datetime.now(UTC) + timedelta(seconds=200)),
            )
        ],
    )

    first, second = consent_records(runtime)
    assert first.collected_at == earlier
    assert second.collected_at <= datetime.now(UTC)


# -- clock skew ------------------------------------------------------------------------------------


def test_events_from_a_clock_running_ahead_are_moved_to_ours_by_sent_at(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """The sender's clock is two hours ahead: it stamps an event ten minutes before it sends the
    batch. Taken as stamped, the event is from the future and the batch is refused; moved by
    ``receivedAt - sentAt``, it happened ten minutes before we received it."""
    skew, ago = timedelta(hours=2), timedelta(minutes=10)
    sent = datetime.now(UTC)
    message = segment_message(context=PERSONALIZATION, timestamp=iso(sent + skew - ago))

    answer = _batch(api, keys.collector, [message], sentAt=iso(sent + skew))
    received_by = datetime.now(UTC)

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    [event] = stored_events(runtime)
    assert sent - ago <= event.occurred_at <= received_by - ago


def test_a_message_sent_at_beats_its_batch_and_corrects_consent_too(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """A clock three hours behind: the message says when it was sent (the batch says otherwise,
    and is overruled); the consent it carries and its event are placed a minute before receipt,
    not three hours and a minute."""
    behind, ago = timedelta(hours=3), timedelta(minutes=1)
    sent = datetime.now(UTC)
    message = segment_message(context=PERSONALIZATION, timestamp=iso(sent - behind - ago), sentAt=iso(sent - behind))

    answer = _batch(api, keys.collector, [message], sentAt=iso(sent + timedelta(days=1)))
    received_by = datetime.now(UTC)

    assert answer.status_code == 200, answer.text
    [record] = consent_records(runtime)
    [event] = stored_events(runtime)
    for when in (record.collected_at, event.occurred_at):
        assert sent - ago <= when <= received_by - ago


def test_a_single_call_with_sent_at_is_corrected_and_one_without_keeps_its_stamp(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """``sentAt`` on a single call corrects it; without one, a past stamp is an import of past
    events and is kept exactly."""
    sent, ago = datetime.now(UTC), timedelta(minutes=5)
    corrected = segment_message(context=PERSONALIZATION, timestamp=iso(sent + timedelta(hours=1) - ago))
    corrected["sentAt"] = iso(sent + timedelta(hours=1))
    past = sent - timedelta(days=3)
    kept = segment_message(context=PERSONALIZATION, timestamp=iso(past))

    first = api.post("/v1/track", headers=basic_auth(keys.collector), json=corrected)
    received_by = datetime.now(UTC)
    second = api.post("/v1/track", headers=basic_auth(keys.collector), json=kept)

    assert (first.status_code, second.status_code) == (200, 200), first.text + second.text
    old, new = stored_events(runtime)
    assert old.occurred_at == past
    assert sent - ago <= new.occurred_at <= received_by - ago


def test_a_long_event_name_becomes_a_type_that_fits(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    """Segment allows 200-character event names; our types are at most 100 characters."""
    name = "Viewed " + "a very long product listing " * 6

    answer = _batch(api, keys.collector, [segment_message(context=PERSONALIZATION, event=name[:200])])

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    [stored] = stored_events(runtime)
    assert stored.type.startswith("viewed_a_very_long_product_listing")
    assert len(stored.type) <= 100
