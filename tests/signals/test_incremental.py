"""Signals kept incrementally as events arrive: one row per (subject, dimension, value, category,
epoch), evidence counted, scores recency-decayed and adding up across batches, values encrypted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from profilestore.consent.service import EPOCH_ZERO
from profilestore.runtime import Runtime
from profilestore.signals import service as signals
from profilestore.signals.models import Signal
from tests.conftest import Keys
from tests.events.support import event, grant, ingest, stored_signals

ADA = {"email": "ada@example.com"}
DAY = 86_400.0


def _expected_score(runtime: Runtime, evidence: list[tuple[str, datetime]], at: datetime) -> float:
    """Σ weight · 2^(-age / half-life), written out independently of the service."""
    settings = runtime.settings.signals
    total = 0.0
    for event_type, occurred in evidence:
        weight = settings.type_weights.get(event_type, settings.default_weight)
        age_days = (at - occurred).total_seconds() / DAY
        total += weight * 0.5 ** (age_days / settings.half_life_days)
    return total


def _score_at(runtime: Runtime, row: Signal, at: datetime) -> float:
    """A stored score (held as of ``score_at``) carried to ``at`` by the half-life."""
    age_days = (at - row.score_at).total_seconds() / DAY
    return row.score * 0.5 ** (age_days / runtime.settings.signals.half_life_days)


def _values(runtime: Runtime, subject_id: str) -> dict[tuple[str, str], int]:
    """(dimension, decrypted value) → evidence, for every signal of the subject."""
    everything = signals.Permitted(frozenset({"user"}), EPOCH_ZERO)
    with runtime.db.transaction(write=False) as session:
        found = signals.read(
            session,
            runtime.vault.cipher(subject_id),
            everything,
            runtime.settings.signals,
            datetime.now(UTC),
            limit=1000,
        )
    return {(b.dimension, b.value): b.evidence for b in found.values}


def test_a_batch_becomes_one_row_per_dimension_and_value_with_evidence_last_seen_and_decayed_score(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA)
    now = datetime.now(UTC)
    seen = [
        ("product_viewed", now - timedelta(days=1)),
        ("product_viewed", now - timedelta(days=9, hours=5)),
        ("page_viewed", now - timedelta(days=30)),
        ("wishlist_shared", now - timedelta(hours=3)),  # no weight configured: the default weight
    ]
    ingest(
        api,
        keys,
        [
            event(ADA, f"m-{i}", type=t, occurred_at=at, properties={"category": "Shoes"}, category="user.behavior")
            for i, (t, at) in enumerate(seen)
        ],
    )

    [row] = stored_signals(runtime, subject)
    assert (row.dimension, row.category, row.evidence) == ("category", "user.behavior", 4)
    assert row.last_seen == max(at for _, at in seen)
    common = now + timedelta(days=2)
    assert _score_at(runtime, row, common) == pytest.approx(_expected_score(runtime, seen, common), rel=1e-6)
    assert _values(runtime, subject) == {("category", "shoes"): 4}


def test_a_later_batch_updates_the_same_row_and_the_scores_add_up_after_decay(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA)
    now = datetime.now(UTC)
    first = [("product_viewed", now - timedelta(days=20)), ("product_viewed", now - timedelta(days=6))]
    second = [("product_viewed", now - timedelta(days=2)), ("product_viewed", now - timedelta(minutes=1))]
    ingest(api, keys, [event(ADA, f"a-{i}", occurred_at=at) for i, (_, at) in enumerate(first)])
    [after_first] = stored_signals(runtime, subject)

    ingest(api, keys, [event(ADA, f"b-{i}", occurred_at=at) for i, (_, at) in enumerate(second)])

    [row] = stored_signals(runtime, subject)
    assert row.evidence == 4
    assert row.last_seen == second[-1][1]
    assert row.score_at >= after_first.score_at
    common = now + timedelta(days=1)
    assert _score_at(runtime, row, common) == pytest.approx(_expected_score(runtime, first + second, common), rel=1e-6)


def test_a_late_event_older_than_the_last_one_adds_evidence_without_moving_last_seen(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA)
    now = datetime.now(UTC)
    ingest(api, keys, [event(ADA, "recent", occurred_at=now - timedelta(hours=1))])
    late = event(
        ADA, "late", type="purchase", category="user.behavior.browsing_history", occurred_at=now - timedelta(days=40)
    )
    ingest(api, keys, [late])

    [row] = stored_signals(runtime, subject)
    assert row.evidence == 2
    assert row.last_seen == now - timedelta(hours=1)
    evidence = [("product_viewed", now - timedelta(hours=1)), ("purchase", now - timedelta(days=40))]
    assert _score_at(runtime, row, now) == pytest.approx(_expected_score(runtime, evidence, now), rel=1e-6)


def test_values_are_normalised_so_spelling_variants_share_one_row(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    subject = grant(api, keys, ADA)
    spellings = ["Shoes", " shoes ", "SHOES", "shoes\t"]
    ingest(api, keys, [event(ADA, f"m-{i}", properties={"category": s}) for i, s in enumerate(spellings)])

    rows = stored_signals(runtime, subject)
    assert len(rows) == 1
    assert rows[0].evidence == len(spellings)
    assert _values(runtime, subject) == {("category", "shoes"): 4}


def test_signal_values_are_stored_encrypted(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, ADA)
    ingest(api, keys, [event(ADA, "m-1", properties={"category": "Snowshoes", "brand": "Zebracorp"})])

    rows = stored_signals(runtime, subject)
    assert len(rows) == 2
    for row in rows:
        blob = bytes(row.value_ct)
        for text in (b"snowshoes", b"Snowshoes", b"zebracorp", b"Zebracorp"):
            assert text not in blob
            assert text not in bytes(row.value_index)
    assert _values(runtime, subject) == {("category", "snowshoes"): 1, ("brand", "zebracorp"): 1}


def test_a_price_becomes_a_price_band_signal(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, ADA)
    ingest(
        api,
        keys,
        [
            event(ADA, "m-1", properties={"price": 42}),
            event(ADA, "m-2", properties={"product": {"price": 30.5}}),
            event(ADA, "m-3", properties={"price": 260}),
        ],
    )

    assert _values(runtime, subject) == {("price_band", "25-50"): 2, ("price_band", "250+"): 1}


def test_one_event_feeds_every_dimension_it_speaks_to(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, ADA)
    properties = {"category": "Shoes", "brand": "Acme", "channel": "App", "price": 99, "sku": "X1"}
    ingest(api, keys, [event(ADA, "m-1", properties=properties)])

    assert _values(runtime, subject) == {
        ("category", "shoes"): 1,
        ("brand", "acme"): 1,
        ("channel", "app"): 1,
        ("price_band", "50-100"): 1,
    }
    assert {r.evidence for r in stored_signals(runtime, subject)} == {1}


def test_signals_are_kept_apart_by_data_category(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    subject = grant(api, keys, ADA)
    ingest(
        api,
        keys,
        [
            event(ADA, "view", type="product_viewed", properties={"category": "Shoes"}),
            event(ADA, "cart", type="added_to_cart", properties={"category": "Shoes"}),
            event(ADA, "buy", type="purchase", properties={"category": "Shoes"}),
        ],
    )

    rows = stored_signals(runtime, subject)
    assert sorted((r.category, r.evidence) for r in rows) == [
        ("user.behavior.browsing_history", 1),
        ("user.behavior.purchase_history", 2),
    ]
    assert len({bytes(r.value_index) for r in rows}) == 1  # the same value, in two buckets


def test_signals_of_two_subjects_never_share_a_row(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    ada = grant(api, keys, ADA)
    bob = grant(api, keys, {"email": "bob@example.com"})
    ingest(api, keys, [event(ADA, "a"), event({"email": "bob@example.com"}, "b"), event(ADA, "c")])

    assert [r.evidence for r in stored_signals(runtime, ada)] == [2]
    assert [r.evidence for r in stored_signals(runtime, bob)] == [1]
