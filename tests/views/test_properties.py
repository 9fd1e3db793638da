"""Properties of views.

1. ``ranking.rank`` on its own: behaviour (and both) above declaration, by score within a tier,
   contradictions marked exactly when the dimension has enough behaviour, nothing lost or invented.
2. The whole service through HTTP: random consent histories, policies, events and declarations,
   posted in time order, then views for random purposes. A plain model of the rules (written here,
   over the generated history, without the service's helpers) bounds what a view may hold:

   - *may* (the most a view may use): the purpose is in force now, the item's category is in the
     purpose's policy, and the purpose has been in force without a break since the item arrived;
   - *must* (what it has to use): the same, for items that arrived after the current grant of the
     purpose deciding the consent (itself or the nearest purpose above it with a record) began.

   The view must lie between the two (they coincide unless a purpose gained its own grant while a
   parent's grant covered it); where they coincide it must match the model exactly.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profilestore.runtime import Runtime
from profilestore.signals.types import Behaviour
from profilestore.views.ranking import Declaration, rank
from tests.conftest import Keys
from tests.views.support import Store, bearer, reader_key, set_policy

# -- 1. ranking on its own --------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIMENSIONS = ["category", "brand"]
WORDS = ["golf", "tennis", "chess", "sailing", "judo", "polo"]

behaviours = st.lists(
    st.builds(
        lambda d, v, s, e, h: Behaviour(d, v, s, e, T0 + timedelta(hours=h)),
        st.sampled_from(DIMENSIONS),
        st.sampled_from(WORDS),
        st.floats(min_value=0, max_value=50, allow_nan=False),
        st.integers(min_value=1, max_value=9),
        st.integers(min_value=0, max_value=1000),
    ),
    max_size=12,
    unique_by=lambda b: (b.dimension, b.value),
)
declarations = st.lists(
    st.builds(
        lambda d, v, h: Declaration(d, v, T0 + timedelta(hours=h)),
        st.sampled_from(DIMENSIONS),
        st.sampled_from(WORDS),
        st.integers(min_value=0, max_value=1000),
    ),
    max_size=8,
)


def _sort_key(tier: str, score: float, value: str) -> tuple[bool, float, str]:
    return (tier == "declared", -score, value)


@settings(max_examples=200, deadline=None)
@given(
    behaviour=behaviours,
    declared=declarations,
    weight=st.floats(min_value=0.1, max_value=5, allow_nan=False),
    min_evidence=st.integers(min_value=1, max_value=12),
    limit=st.integers(min_value=1, max_value=8),
)
def test_ranking_puts_behaviour_first_then_score_and_marks_contradictions(
    behaviour: list[Behaviour], declared: list[Declaration], weight: float, min_evidence: int, limit: int
) -> None:
    ranked = rank(behaviour, declared, declared_weight=weight, contradiction_min_evidence=min_evidence, limit=limit)

    for dimension in DIMENSIONS:
        seen = {b.value: b for b in behaviour if b.dimension == dimension}
        said: dict[str, datetime] = {}
        for d in declared:
            if d.dimension == dimension:
                said[d.value] = max(said.get(d.value, d.declared_at), d.declared_at)
        volume = sum(b.evidence for b in seen.values())
        expected = {}
        for value in set(seen) | set(said):
            if value in seen and value in said:
                b = seen[value]
                expected[value] = ("both", b.score + weight, b.evidence, max(b.last_seen, said[value]), False)
            elif value in seen:
                b = seen[value]
                expected[value] = ("behavioural", b.score, b.evidence, b.last_seen, False)
            else:
                expected[value] = ("declared", weight, 0, said[value], volume >= min_evidence)
        got = ranked.get(dimension, [])
        if not expected:
            assert got == []
            continue

        assert len(got) == min(limit, len(expected))
        assert len({s.value for s in got}) == len(got)
        for s in got:
            tier, score, evidence, last_seen, contradicted = expected[s.value]
            assert (s.tier, s.evidence, s.last_seen, s.contradicted) == (tier, evidence, last_seen, contradicted)
            assert s.score == pytest.approx(score)
        tiers = [s.tier for s in got]
        assert tiers == sorted(tiers, key=lambda t: t == "declared"), "behaviour and both rank above declared"
        for group in ({"behavioural", "both"}, {"declared"}):
            scores = [s.score for s in got if s.tier in group]
            assert all(a >= b for a, b in itertools.pairwise(scores)), "within a tier, by score"
        # what the limit cut off ranks after everything kept
        kept = {s.value for s in got}
        for value in set(expected) - kept:
            tier, score = expected[value][0], expected[value][1]
            assert _sort_key(tier, score, value) > _sort_key(got[-1].tier, got[-1].score, got[-1].value)


# -- 2. the service against a model of the rules ----------------------------------------------------

PURPOSES = ["personalize", "personalize.content", "personalize.content.profiling", "marketing"]
CATEGORIES = ["user.behavior.browsing_history", "user.behavior.purchase_history", "user.preferences.interests"]
INTERESTS = "user.preferences.interests"
EVENT_KINDS = {  # event type → (its data category, its configured weight)
    "product_viewed": ("user.behavior.browsing_history", 2.0),
    "purchase": ("user.behavior.purchase_history", 8.0),
}
VALUES = ["golf", "tennis", "chess"]
HALF_LIFE_DAYS = 14.0
CONTRADICTION_MIN_EVIDENCE = 5


@dataclass(frozen=True)
class ConsentStep:
    decisions: dict[str, str]


@dataclass(frozen=True)
class EventStep:
    type: str
    value: str
    days_ago: int
    count: int


@dataclass(frozen=True)
class PreferenceStep:
    value: str


Step = ConsentStep | EventStep | PreferenceStep

steps_strategy = st.lists(
    st.one_of(
        st.builds(
            ConsentStep,
            st.dictionaries(
                st.sampled_from(PURPOSES),
                st.sampled_from(["granted", "granted", "withdrawn", "denied"]),
                min_size=1,
                max_size=2,
            ),
        ),
        st.builds(
            EventStep,
            st.sampled_from(sorted(EVENT_KINDS)),
            st.sampled_from(VALUES),
            st.integers(min_value=0, max_value=60),
            st.integers(min_value=1, max_value=4),
        ),
        st.builds(PreferenceStep, st.sampled_from(VALUES)),
    ),
    min_size=1,
    max_size=12,
)
policies_strategy = st.fixed_dictionaries({p: st.frozensets(st.sampled_from(CATEGORIES)) for p in PURPOSES})


# The model. Plain functions over the history; nothing from the service's rules.


def purposes_above(key: str) -> list[str]:
    """``key`` and the purposes it sits beneath, nearest first."""
    chain = [key]
    while "." in key:
        key = key.rsplit(".", 1)[0]
        chain.append(key)
    return chain


def policy_covers(policy: frozenset[str], category: str) -> bool:
    return any(category == c or category.startswith(c + ".") for c in policy)


@dataclass(frozen=True)
class Taxonomy:
    basis: dict[str, str]
    policy: dict[str, frozenset[str]]


def in_force(taxonomy: Taxonomy, records: dict[str, str], purpose: str) -> bool:
    if taxonomy.basis[purpose] != "consent":
        return True
    for candidate in purposes_above(purpose):
        if candidate in records:
            return records[candidate] == "granted"
    return False


def collectable(taxonomy: Taxonomy, records: dict[str, str], category: str) -> bool:
    return any(in_force(taxonomy, records, q) and policy_covers(taxonomy.policy[q], category) for q in taxonomy.basis)


@dataclass
class Item:
    """Something the store kept: an event (by its ref) or a declaration, and when it arrived."""

    step: int
    category: str
    ref: str = ""
    value: str = ""
    type: str = ""
    occurred: datetime | None = None


@dataclass
class History:
    taxonomy: Taxonomy
    snapshots: list[dict[str, str]] = field(default_factory=list)  # latest status per purpose after each step
    events: list[Item] = field(default_factory=list)
    latest_declaration: Item | None = None


def simulate(taxonomy: Taxonomy, steps: list[Step], occurred: list[datetime]) -> History:
    history = History(taxonomy)
    records: dict[str, str] = {}
    for index, step in enumerate(steps):
        if isinstance(step, ConsentStep):
            records = {**records, **step.decisions}
        elif isinstance(step, EventStep):
            category = EVENT_KINDS[step.type][0]
            if collectable(taxonomy, records, category):
                history.events += [
                    Item(
                        index, category, ref=f"{index}-{i}", value=step.value, type=step.type, occurred=occurred[index]
                    )
                    for i in range(step.count)
                ]
        elif collectable(taxonomy, records, INTERESTS):
            history.latest_declaration = Item(index, INTERESTS, value=step.value)
        history.snapshots.append(dict(records))
    return history


def usable_since(history: History, purpose: str, *, strict: bool) -> int | None:
    """Items that arrived at a step after the returned index may be used (None: nothing may).

    Loose: the purpose has been in force at every step since. Strict: the current grant of the
    purpose that decides (itself or the nearest above it with a record) began before the item."""
    final = history.snapshots[-1] if history.snapshots else {}
    if not in_force(history.taxonomy, final, purpose):
        return None
    if not strict:
        since = -1
        for index, records in enumerate(history.snapshots):
            if not in_force(history.taxonomy, records, purpose):
                since = index
        return since
    decider = next((q for q in purposes_above(purpose) if q in final), None)
    if decider is None:  # a purpose that needs no consent
        return -1
    since, previous = -1, None
    for index, records in enumerate(history.snapshots):
        status = records.get(decider)
        if status == "granted" and previous != "granted":
            since = index
        previous = status
    return since


@dataclass
class Expected:
    personalised: bool
    refs: set[str]
    signals: dict[str, tuple[float, int]]  # behavioural value → (weight decayed to now, evidence)
    declared: str | None


def expected_view(history: History, purpose: str, now: datetime, *, strict: bool) -> Expected:
    since = usable_since(history, purpose, strict=strict)
    if since is None:
        return Expected(False, set(), {}, None)
    policy = history.taxonomy.policy[purpose]

    def usable(item: Item) -> bool:
        return item.step > since and policy_covers(policy, item.category)

    events = [e for e in history.events if usable(e)]
    signals: dict[str, tuple[float, int]] = {}
    for e in events:
        assert e.occurred is not None
        weight = EVENT_KINDS[e.type][1] * 0.5 ** ((now - e.occurred).total_seconds() / (HALF_LIFE_DAYS * 86_400))
        score, evidence = signals.get(e.value, (0.0, 0))
        signals[e.value] = (score + weight, evidence + 1)
    declaration = history.latest_declaration
    declared = declaration.value if declaration is not None and usable(declaration) else None
    return Expected(True, {e.ref for e in events}, signals, declared)


def check_ranking_invariant(signals: dict[str, list[dict[str, Any]]]) -> None:
    for ranked in signals.values():
        tiers = [s["tier"] for s in ranked]
        assert tiers == sorted(tiers, key=lambda t: t == "declared"), tiers
        for group in ({"behavioural", "both"}, {"declared"}):
            scores = [s["score"] for s in ranked if s["tier"] in group]
            assert all(a >= b for a, b in itertools.pairwise(scores)), scores


def check_exact(body: dict[str, Any], expected: Expected) -> None:
    ranked = {s["value"]: s for s in body["signals"].get("category", [])}
    assert set(body["signals"]) <= {"category"}
    behaved = set(expected.signals)
    said = {expected.declared} if expected.declared else set()
    assert set(ranked) == behaved | said
    volume = sum(evidence for _, evidence in expected.signals.values())
    for value, s in ranked.items():
        if value in behaved:
            score, evidence = expected.signals[value]
            assert s["tier"] == ("both" if value in said else "behavioural")
            assert s["evidence"] == evidence
            assert s["score"] == pytest.approx(score + (1.0 if value in said else 0.0), rel=1e-3)
            assert s["contradicted"] is False
        else:
            assert s["tier"] == "declared"
            assert s["evidence"] == 0
            assert s["score"] == pytest.approx(1.0)
            assert s["contradicted"] is (volume >= CONTRADICTION_MIN_EVIDENCE)


def check_view(body: dict[str, Any], must: Expected, may: Expected) -> None:
    assert must.personalised == may.personalised
    assert body["personalised"] is must.personalised
    if not must.personalised:
        assert body["signals"] == {} and body["preferences"] == [] and body["recent_events"] == []
        return
    check_ranking_invariant(body["signals"])
    refs = {e["properties"]["ref"] for e in body["recent_events"]}
    assert len(refs) == len(body["recent_events"])
    assert must.refs <= refs <= may.refs, (must.refs, refs, may.refs)
    declared = [p["value"] for p in body["preferences"]]
    assert declared in ([must.declared] if must.declared else [], [may.declared] if may.declared else [])
    behaved = {s["value"]: s for s in body["signals"].get("category", []) if s["tier"] != "declared"}
    assert set(must.signals) <= set(behaved) <= set(may.signals)
    for value, s in behaved.items():
        low = must.signals.get(value, (0.0, 0))[1]
        assert low <= s["evidence"] <= may.signals[value][1]
    if must.refs == may.refs and must.declared == may.declared:
        check_exact(body, must)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _taxonomy(api: TestClient, keys: Keys) -> Taxonomy:
    answer = api.get("/v1/purposes", headers=keys.header("admin"))
    assert answer.status_code == 200
    purposes = answer.json()
    return Taxonomy(
        basis={p["key"]: p["legal_basis"] for p in purposes},
        policy={p["key"]: frozenset(p["categories"]) for p in purposes},
    )


def run_history(
    api: TestClient, keys: Keys, reader: dict[str, str], policies: dict[str, frozenset[str]], steps: list[Step]
) -> None:
    for purpose, categories in policies.items():
        set_policy(api, keys, purpose, sorted(categories))
    taxonomy = _taxonomy(api, keys)
    assert {p: taxonomy.policy[p] for p in PURPOSES} == policies

    person = Store(api, keys, {"anonymous_id": f"visitor-{uuid.uuid4().hex}"})
    subject: str | None = None
    occurred: list[datetime] = []
    for index, step in enumerate(steps):
        now = datetime.now(UTC)
        if isinstance(step, EventStep):
            when = now - timedelta(days=step.days_ago, minutes=index)
            occurred.append(when)
            events = [
                {
                    "identifiers": person.identifiers,
                    "type": step.type,
                    "properties": {"category": step.value, "ref": f"{index}-{i}"},
                    "occurred_at": _iso(when),
                    "message_id": f"{person.identifiers['anonymous_id']}-{index}-{i}",
                }
                for i in range(step.count)
            ]
            answer = api.post("/v1/events", headers=keys.header("collector"), json={"events": events})
            assert answer.status_code == 200, answer.text
        elif isinstance(step, ConsentStep):
            occurred.append(now)
            subject = person.consent(step.decisions, at=now)
        else:
            occurred.append(now)
            body = {
                "identifiers": person.identifiers,
                "preferences": [{"key": "favourite_category", "value": step.value, "category": INTERESTS}],
                "source": "profile-page",
                "declared_at": _iso(now),
            }
            answer = api.post("/v1/preferences", headers=keys.header("collector"), json=body)
            assert answer.status_code == 201, answer.text

        if subject is not None and (isinstance(step, ConsentStep) or index == len(steps) - 1):
            check_views(api, reader, subject, simulate(taxonomy, steps[: index + 1], occurred))


def check_views(api: TestClient, reader: dict[str, str], subject: str, history: History) -> None:
    """Every purpose's view now against the model of the history so far."""
    for purpose in PURPOSES:
        answer = api.get(
            f"/v1/subjects/{subject}/view",
            headers=reader,
            params={"purpose": purpose, "include": "recent_events", "limit": 100},
        )
        assert answer.status_code == 200, answer.text
        now = datetime.now(UTC)
        must = expected_view(history, purpose, now, strict=True)
        may = expected_view(history, purpose, now, strict=False)
        try:
            check_view(answer.json(), must, may)
        except AssertionError as failure:
            raise AssertionError(
                f"view for {purpose} after {len(history.snapshots)} steps: {answer.json()}"
            ) from failure


@pytest.fixture
def wide_reader(runtime: Runtime) -> dict[str, str]:
    """One reader for every purpose under test (hypothesis examples share one test's database)."""
    return bearer(reader_key(runtime, "personalize", "marketing"))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policies=policies_strategy, steps=steps_strategy)
def test_views_hold_only_what_the_consent_history_and_policy_allow(
    api: TestClient, keys: Keys, wide_reader: dict[str, str], policies: dict[str, frozenset[str]], steps: list[Step]
) -> None:
    run_history(api, keys, wide_reader, policies, steps)


# -- 2b. the model itself, on histories small enough to reason about by hand --------------------------


def _taxonomy_for_model() -> Taxonomy:
    everything = frozenset(CATEGORIES)
    return Taxonomy(
        basis={p: "consent" for p in [*PURPOSES, "personalize.system"]},
        policy={**{p: everything for p in PURPOSES}, "personalize.system": everything},
    )


def test_the_model_drops_what_came_before_a_withdrawal_and_keeps_a_parent_covered_history_loosely() -> None:
    taxonomy = _taxonomy_for_model()
    at = [T0 + timedelta(minutes=i) for i in range(6)]
    steps: list[Step] = [
        ConsentStep({"personalize": "granted"}),
        EventStep("purchase", "golf", 0, 1),
        ConsentStep({"personalize.content": "granted"}),
        EventStep("purchase", "tennis", 0, 1),
        ConsentStep({"personalize": "withdrawn"}),
        EventStep("purchase", "chess", 0, 1),
    ]
    history = simulate(taxonomy, steps, at)

    content_must = expected_view(history, "personalize.content", at[-1], strict=True)
    content_may = expected_view(history, "personalize.content", at[-1], strict=False)
    parent = expected_view(history, "personalize", at[-1], strict=False)

    assert content_must.refs == {"3-0", "5-0"}
    assert content_may.refs == {"1-0", "3-0", "5-0"}
    assert parent.personalised is False
    # chess came while only personalize.content (and what it covers) was in force: still collected
    assert [e.ref for e in history.events] == ["1-0", "3-0", "5-0"]
