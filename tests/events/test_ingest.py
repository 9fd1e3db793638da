"""Native event ingest (POST /v1/events): categories, the consent gate at collection, encryption,
idempotency, grant epochs, and an anonymous visitor's history following them when they sign up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from profilestore.crypto.service import DecryptionError
from profilestore.events.service import decrypt_properties
from profilestore.runtime import Runtime
from tests.conftest import Keys, row_counts
from tests.events.support import (
    EventCounter,
    consent_state,
    event,
    grant,
    ingest,
    new_collector,
    restrict,
    stored_events,
    stored_signals,
)

ADA = {"email": "ada@example.com"}
ANON = {"anonymous_id": "a-1"}


# -- data categories --------------------------------------------------------------------------------


def test_each_event_type_gets_its_configured_default_category(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    types = ["product_viewed", "page_viewed", "added_to_cart", "purchase", "search", "wishlist_shared"]
    answer = ingest(api, keys, [event(ADA, f"m-{t}", type=t) for t in types])

    assert answer == {"accepted": 6, "duplicates": 0, "dropped": {}}
    assert {e.type: e.category for e in stored_events(runtime)} == {
        "product_viewed": "user.behavior.browsing_history",
        "page_viewed": "user.behavior.browsing_history",
        "added_to_cart": "user.behavior.purchase_history",
        "purchase": "user.behavior.purchase_history",
        "search": "user.behavior.search_history",
        "wishlist_shared": "user.behavior",  # no default for the type: the configured fallback
    }
    assert runtime.settings.events.fallback_category == "user.behavior"


def test_an_explicit_category_overrides_the_default_of_its_type(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    ingest(api, keys, [event(ADA, "m-1", type="product_viewed", category="user.behavior.search_history")])

    [stored] = stored_events(runtime)
    assert stored.category == "user.behavior.search_history"


# -- the consent gate ------------------------------------------------------------------------------


def test_a_granted_purpose_whose_policy_covers_the_category_lets_the_event_in_and_is_recorded_on_it(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA, {"personalize": "granted", "analytics": "granted", "marketing": "denied"})
    answer = ingest(api, keys, [event(ADA, "m-1")])

    assert answer["accepted"] == 1
    [stored] = stored_events(runtime)
    assert stored.subject_id == subject
    assert {"personalize", "analytics"} <= set(stored.purposes)
    assert all(p.split(".")[0] in ("personalize", "analytics") for p in stored.purposes), stored.purposes


def test_only_the_purposes_whose_policy_covers_the_category_are_recorded_on_the_event(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    # analytics may use user.behavior but not user.preferences; personalize may use both
    grant(api, keys, ADA, {"personalize": "granted", "analytics": "granted"})
    ingest(api, keys, [event(ADA, "m-1", category="user.preferences.interests")])

    [stored] = stored_events(runtime)
    assert "personalize" in stored.purposes
    assert not any(p.startswith("analytics") for p in stored.purposes)


def test_events_of_unknown_identifiers_are_dropped_for_no_consent_and_nobody_is_created(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    before = row_counts(runtime)
    answer = ingest(api, keys, [event({"anonymous_id": "never-seen"}, "m-1"), event({"email": "x@example.com"}, "m-2")])

    assert answer == {"accepted": 0, "duplicates": 0, "dropped": {"no_consent": 2}}
    assert row_counts(runtime) == before


def test_a_subject_who_denied_every_purpose_has_their_events_dropped(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA, {"personalize": "denied", "marketing": "denied", "analytics": "denied"})
    before = row_counts(runtime)
    answer = ingest(api, keys, [event(ADA, "m-1")])

    assert answer["dropped"] == {"no_consent": 1}
    assert answer["accepted"] == 0
    assert row_counts(runtime) == before


def test_consent_to_a_purpose_with_an_empty_policy_does_not_admit_behaviour(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA, {"third_party_sharing": "granted"})
    answer = ingest(api, keys, [event(ADA, "m-1")])

    assert answer["dropped"] == {"no_consent": 1}
    assert stored_events(runtime) == []


def test_events_after_withdrawal_are_dropped_while_earlier_ones_stay(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    now = datetime.now(UTC)
    grant(api, keys, ADA, at=now - timedelta(hours=2))
    assert ingest(api, keys, [event(ADA, "before", occurred_at=now - timedelta(hours=1))])["accepted"] == 1
    grant(api, keys, ADA, {"personalize": "withdrawn"}, at=now - timedelta(minutes=30))

    answer = ingest(api, keys, [event(ADA, "after")])

    assert answer["dropped"] == {"no_consent": 1}
    assert [e.message_id for e in stored_events(runtime)] == ["before"]


def test_events_after_consent_expired_are_dropped(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    valid_days = runtime.settings.default_consent_valid_days
    grant(api, keys, ADA, at=datetime.now(UTC) - timedelta(days=valid_days + 5))

    answer = ingest(api, keys, [event(ADA, "m-1")])

    assert answer["dropped"] == {"no_consent": 1}
    assert stored_events(runtime) == []


def test_an_event_whose_category_no_purpose_in_force_covers_is_dropped_beside_one_that_is_covered(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA, {"personalize": "granted", "analytics": "granted"})
    answer = ingest(api, keys, [event(ADA, "email", category="user.contact.email"), event(ADA, "view")])

    assert answer == {"accepted": 1, "duplicates": 0, "dropped": {"no_consent": 1}}
    assert [e.message_id for e in stored_events(runtime)] == ["view"]


def test_a_restricted_subject_has_their_events_dropped_as_restricted(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA)
    restrict(runtime, subject)
    before = row_counts(runtime)

    answer = ingest(api, keys, [event(ADA, "m-1"), event(ADA, "m-2")])

    assert answer == {"accepted": 0, "duplicates": 0, "dropped": {"restricted": 2}}
    assert row_counts(runtime) == before


def test_dropped_events_do_not_fail_their_batch_and_leave_nothing_behind(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA)
    restricted = grant(api, keys, {"email": "rex@example.com"})
    restrict(runtime, restricted)

    answer = ingest(
        api,
        keys,
        [
            event({"anonymous_id": "stranger"}, "unknown"),
            event(ADA, "kept-1", properties={"category": "Shoes", "brand": "Acme"}),
            event({"email": "rex@example.com"}, "restricted", properties={"category": "Hats"}),
            event(ADA, "uncovered", category="user.contact.email", properties={"category": "Socks"}),
            event(ADA, "kept-2"),
        ],
    )

    assert answer == {"accepted": 2, "duplicates": 0, "dropped": {"no_consent": 2, "restricted": 1}}
    assert sorted(e.message_id for e in stored_events(runtime)) == ["kept-1", "kept-2"]
    assert all(s.subject_id != restricted for s in stored_signals(runtime))
    assert {s.dimension for s in stored_signals(runtime)} == {"category", "brand"}


def test_a_dropped_events_message_id_is_not_used_up(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    """A tracker that retries after the person consented must not find its event counted as a duplicate."""
    assert ingest(api, keys, [event(ANON, "m-1")])["dropped"] == {"no_consent": 1}
    grant(api, keys, ANON)

    answer = ingest(api, keys, [event(ANON, "m-1")])

    assert answer == {"accepted": 1, "duplicates": 0, "dropped": {}}


def test_the_events_counter_counts_each_outcome_and_reason(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    restrict(runtime, grant(api, keys, {"email": "rex@example.com"}))
    counters = {
        "accepted": EventCounter("accepted"),
        "duplicate": EventCounter("duplicate"),
        "no_consent": EventCounter("dropped", "no_consent"),
        "restricted": EventCounter("dropped", "restricted"),
    }
    before = {name: c.value() for name, c in counters.items()}

    ingest(
        api,
        keys,
        [
            event(ADA, "a"),
            event(ADA, "b"),
            event(ADA, "a"),
            event({"anonymous_id": "nobody"}, "c"),
            event({"email": "rex@example.com"}, "d"),
            event({"email": "rex@example.com"}, "e"),
            event({"email": "rex@example.com"}, "f"),
        ],
    )

    after = {name: c.value() for name, c in counters.items()}
    assert {name: after[name] - before[name] for name in counters} == {
        "accepted": 2,
        "duplicate": 1,
        "no_consent": 1,
        "restricted": 3,
    }


# -- encryption ------------------------------------------------------------------------------------


def test_event_properties_are_stored_encrypted_and_decrypt_with_the_subjects_key(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA)
    properties = {"category": "Trail Running Shoes", "sku": "SKU-DISTINCTIVE-4711", "price": 42.5}
    ingest(api, keys, [event(ADA, "m-1", properties=properties)])

    [stored] = stored_events(runtime)
    blob = bytes(stored.properties_ct)
    for plaintext in (b"Trail Running Shoes", b"SKU-DISTINCTIVE-4711", b"42.5", b"sku"):
        assert plaintext not in blob
    assert decrypt_properties(runtime.vault.cipher(subject), stored.event_id, blob) == properties


def test_an_event_ciphertext_is_bound_to_its_row(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, ADA)
    other = grant(api, keys, {"email": "bob@example.com"})
    ingest(api, keys, [event(ADA, "m-1"), event(ADA, "m-2")])
    first, second = stored_events(runtime)

    with pytest.raises(DecryptionError):
        decrypt_properties(runtime.vault.cipher(subject), second.event_id, bytes(first.properties_ct))
    with pytest.raises(DecryptionError):
        decrypt_properties(runtime.vault.cipher(other), first.event_id, bytes(first.properties_ct))


# -- idempotency -----------------------------------------------------------------------------------


def test_a_message_id_resent_in_a_later_batch_is_a_duplicate_and_stored_once(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA)
    assert ingest(api, keys, [event(ADA, "m-1")]) == {"accepted": 1, "duplicates": 0, "dropped": {}}

    again = ingest(api, keys, [event(ADA, "m-1"), event(ADA, "m-2")])

    assert again == {"accepted": 1, "duplicates": 1, "dropped": {}}
    assert [e.message_id for e in stored_events(runtime)] == ["m-1", "m-2"]
    [signal] = stored_signals(runtime)
    assert signal.evidence == 2  # the duplicate added no evidence


def test_a_message_id_repeated_inside_one_batch_is_stored_once(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    grant(api, keys, ADA)
    answer = ingest(api, keys, [event(ADA, "m-1"), event(ADA, "m-1"), event(ADA, "m-1")])

    assert answer == {"accepted": 1, "duplicates": 2, "dropped": {}}
    assert len(stored_events(runtime)) == 1
    [signal] = stored_signals(runtime)
    assert signal.evidence == 1


def test_the_same_message_id_for_another_person_is_another_event(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    """A repeat is the same message from the same client for the same person: a client that reuses
    message ids across people loses nobody's events (and a batch's repeats are found per person,
    beside each other in the unique index)."""
    ada = grant(api, keys, ADA)
    visitor = grant(api, keys, ANON)
    assert ingest(api, keys, [event(ADA, "m-1")]) == {"accepted": 1, "duplicates": 0, "dropped": {}}

    answer = ingest(api, keys, [event(ANON, "m-1"), event(ANON, "m-1"), event(ADA, "m-1")])

    assert answer == {"accepted": 1, "duplicates": 2, "dropped": {}}
    assert sorted(e.subject_id for e in stored_events(runtime)) == sorted([ada, visitor])


def test_a_merge_of_two_people_holding_the_same_message_keeps_one_and_counts_it_once(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    now = datetime.now(UTC)
    grant(api, keys, ADA, at=now - timedelta(hours=2))
    grant(api, keys, ANON, at=now - timedelta(hours=1))
    ingest(api, keys, [event(ADA, "shared"), event(ANON, "shared"), event(ANON, "own")])
    assert len(stored_events(runtime)) == 3

    answer = ingest(api, keys, [event({**ADA, **ANON}, "merging")])

    assert answer == {"accepted": 1, "duplicates": 0, "dropped": {}}
    stored = stored_events(runtime)
    assert sorted(e.message_id for e in stored) == ["merging", "own", "shared"]
    assert len({e.subject_id for e in stored}) == 1
    # The category "shoes", in each person's grant epoch: one piece of evidence per stored event,
    # none for the dropped copy.
    assert sum(s.evidence for s in stored_signals(runtime)) == 3


def test_the_same_message_id_from_another_collector_is_another_event(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    grant(api, keys, ADA)
    other_site = new_collector(runtime, "other-site")
    ingest(api, keys, [event(ADA, "m-1")])

    answer = api.post(
        "/v1/events", headers={"Authorization": f"Bearer {other_site}"}, json={"events": [event(ADA, "m-1")]}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "duplicates": 0, "dropped": {}}
    stored = stored_events(runtime)
    assert [e.message_id for e in stored] == ["m-1", "m-1"]
    assert len({e.client_id for e in stored}) == 2


# -- grant epochs ----------------------------------------------------------------------------------


def test_events_carry_the_epoch_of_the_grant_they_were_collected_under(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    now = datetime.now(UTC)
    subject = grant(api, keys, ADA, at=now - timedelta(hours=3))
    ingest(api, keys, [event(ADA, "first", occurred_at=now - timedelta(hours=2))])
    first_epoch = consent_state(runtime, subject, "personalize").grant_epoch
    assert first_epoch is not None

    grant(api, keys, ADA, {"personalize": "withdrawn"}, at=now - timedelta(hours=1))
    assert consent_state(runtime, subject, "personalize").grant_epoch is None
    grant(api, keys, ADA, at=now - timedelta(minutes=30))
    second_epoch = consent_state(runtime, subject, "personalize").grant_epoch
    ingest(api, keys, [event(ADA, "second")])

    assert second_epoch is not None and second_epoch > first_epoch
    epochs = {e.message_id: e.epoch for e in stored_events(runtime)}
    assert epochs == {"first": first_epoch, "second": second_epoch}
    # their signals are kept apart by epoch, so a view can count only the grant now in force
    assert sorted(s.epoch for s in stored_signals(runtime)) == [first_epoch, second_epoch]


# -- anonymous visitor becomes known ---------------------------------------------------------------


def test_an_anonymous_visitor_who_signs_up_keeps_their_history_on_one_subject(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    now = datetime.now(UTC)
    known = grant(api, keys, {"email": "x@example.com"}, {"analytics": "granted"}, at=now - timedelta(hours=3))
    ingest(
        api,
        keys,
        [event({"email": "x@example.com"}, "k-1", properties={"brand": "Acme"}, occurred_at=now - timedelta(hours=2))],
    )
    visitor = grant(api, keys, ANON, {"personalize": "granted"}, at=now - timedelta(hours=2))
    assert visitor != known
    ingest(
        api,
        keys,
        [
            event(ANON, "a-1", properties={"category": "Shoes"}, occurred_at=now - timedelta(hours=1)),
            event(ANON, "a-2", type="search", properties={"category": "Hats"}, occurred_at=now - timedelta(minutes=50)),
        ],
    )
    anon_events = {e.message_id: e for e in stored_events(runtime, visitor)}
    anon_signals = len(stored_signals(runtime, visitor))
    assert anon_signals == 2

    merged = grant(
        api,
        keys,
        {"anonymous_id": "a-1", "email": "x@example.com"},
        {"marketing": "granted"},
        at=now - timedelta(minutes=5),
    )

    survivor = merged
    assert survivor in (known, visitor)
    loser = visitor if survivor == known else known
    assert stored_events(runtime, loser) == []
    assert stored_signals(runtime, loser) == []
    moved = stored_events(runtime, survivor)
    assert sorted(e.message_id for e in moved) == ["a-1", "a-2", "k-1"]
    cipher = runtime.vault.cipher(survivor)
    properties = {e.message_id: decrypt_properties(cipher, e.event_id, bytes(e.properties_ct)) for e in moved}
    assert properties == {"k-1": {"brand": "Acme"}, "a-1": {"category": "Shoes"}, "a-2": {"category": "Hats"}}
    assert {e.message_id: e.epoch for e in moved if e.message_id in anon_events} == {
        m: e.epoch for m, e in anon_events.items()
    }
    assert len(stored_signals(runtime, survivor)) == anon_signals + 1

    for identifiers in ({"anonymous_id": "a-1"}, {"email": "x@example.com"}):
        found = api.post("/v1/subjects/resolve", headers=keys.header("privacy"), json={"identifiers": identifiers})
        assert found.json() == {"subject_id": survivor}
    consents = api.get(f"/v1/subjects/{survivor}/consents", headers=keys.header("privacy")).json()
    state = {s["purpose"]: s["status"] for s in consents["state"]}
    assert state == {"analytics": "granted", "personalize": "granted", "marketing": "granted"}
    assert {r["subject_id"] for r in consents["history"]} == {known, visitor}

    # the merged history stays usable: later events under either identifier land on the survivor
    answer = ingest(api, keys, [event(ANON, "a-3"), event({"email": "x@example.com"}, "k-2")])
    assert answer["accepted"] == 2
    assert len(stored_events(runtime, survivor)) == 5


# -- identifiers seen together on an event ---------------------------------------------------------


def test_an_event_naming_a_new_identifier_beside_a_known_one_links_it(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA)

    assert ingest(api, keys, [event({**ADA, "anonymous_id": "new-cookie"}, "m-1")])["accepted"] == 1
    answer = ingest(api, keys, [event({"anonymous_id": "new-cookie"}, "m-2")])

    assert answer["accepted"] == 1
    found = api.post(
        "/v1/subjects/resolve", headers=keys.header("privacy"), json={"identifiers": {"anonymous_id": "new-cookie"}}
    )
    assert found.json() == {"subject_id": subject}
    assert {e.subject_id for e in stored_events(runtime)} == {subject}


def test_an_identifier_linked_by_an_event_counts_for_the_rest_of_the_same_batch(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Batching must not change the outcome: the same two events in two batches are both stored."""
    subject = grant(api, keys, ADA)

    answer = ingest(
        api, keys, [event({**ADA, "anonymous_id": "new-cookie"}, "m-1"), event({"anonymous_id": "new-cookie"}, "m-2")]
    )

    assert answer == {"accepted": 2, "duplicates": 0, "dropped": {}}
    assert [e.subject_id for e in stored_events(runtime)] == [subject, subject]


def test_an_event_naming_identifiers_of_two_subjects_merges_them(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    now = datetime.now(UTC)
    ada = grant(api, keys, ADA, at=now - timedelta(hours=2))
    visitor = grant(api, keys, ANON, at=now - timedelta(hours=1))
    ingest(api, keys, [event(ANON, "before-merge")])

    answer = ingest(api, keys, [event({**ADA, **ANON}, "merging"), event(ANON, "after-merge")])

    assert answer["accepted"] == 2
    survivors = {e.subject_id for e in stored_events(runtime)}
    assert len(survivors) == 1 and survivors <= {ada, visitor}


@pytest.mark.parametrize("status", ["denied", "restricted"])
def test_an_event_that_is_dropped_links_no_identifiers(
    status: str, api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Nothing of a dropped event is written: not even the new cookie it names beside a known email."""
    subject = grant(api, keys, ADA, {"personalize": "denied" if status == "denied" else "granted"})
    if status == "restricted":
        restrict(runtime, subject)
    before = row_counts(runtime)

    answer = ingest(api, keys, [event({**ADA, "anonymous_id": "new-cookie"}, "m-1")])

    assert sum(answer["dropped"].values()) == 1
    assert row_counts(runtime) == before
