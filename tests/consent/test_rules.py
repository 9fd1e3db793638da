"""The pure consent rules (`consent/rules.py`), checked against models written here independently.

`derive` turns one purpose's decisions into its current state; `effective` decides, through the
purpose hierarchy, whether a purpose may be used now. Neither touches a database, so hypothesis can
throw thousands of histories at them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from profilestore.consent.rules import Decision, Effective, State, derive, effective

GRANTED, DENIED, WITHDRAWN = "granted", "denied", "withdrawn"
STATUSES = (GRANTED, DENIED, WITHDRAWN)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Pure and fast: a slow example only means a busy machine, never a failure.
no_deadline = settings(deadline=None)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


# -- independent models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelState:
    status: str
    record_id: str
    collected_at: datetime
    expires_at: datetime | None
    grant_started_at: datetime | None


def model_derive(decisions: list[Decision]) -> ModelState | None:
    """The last decision by (collected_at, arrival) decides. A grant in force started at the earliest
    grant of the unbroken run of grants ending with the last decision, where each grant in the run
    arrived (by collected_at) before the one before it had lapsed."""
    if not decisions:
        return None
    timeline = sorted(decisions, key=lambda d: (d.collected_at, d.seq))
    last = timeline[-1]
    started: datetime | None = None
    if last.status == GRANTED:
        first = len(timeline) - 1
        while first > 0:
            before = timeline[first - 1]
            lapsed = before.expires_at is not None and before.expires_at <= timeline[first].collected_at
            if before.status != GRANTED or lapsed:
                break
            first -= 1
        started = timeline[first].collected_at
    return ModelState(last.status, last.record_id, last.collected_at, last.expires_at, started)


def is_at_or_above(candidate: str, purpose: str) -> bool:
    """Whether ``candidate`` is ``purpose`` or one of its ancestors, segment by segment."""
    mine, theirs = candidate.split("."), purpose.split(".")
    return theirs[: len(mine)] == mine


def model_effective(purpose: str, needs_consent: bool, states: dict[str, State], now: datetime) -> Effective:
    if not needs_consent:
        return Effective(True, "not_required", None, None)
    recorded = [key for key in states if is_at_or_above(key, purpose)]
    if not recorded:
        return Effective(False, "none", None, None)

    def depth(key: str) -> int:
        return key.count(".")

    def lapsed(key: str) -> bool:
        state = states[key]
        return state.status == GRANTED and state.expires_at is not None and now >= state.expires_at

    decisions = [key for key in recorded if not lapsed(key)]
    if not decisions:  # only lapsed grants: the most specific one says why
        return Effective(False, "expired", max(recorded, key=depth), None)
    deciding = max(decisions, key=depth)
    state = states[deciding]
    if state.status == GRANTED:
        return Effective(True, GRANTED, deciding, state.grant_started_at)
    return Effective(False, state.status, deciding, None)


# -- strategies ------------------------------------------------------------------------------------


@st.composite
def decision_lists(draw: st.DrawFn, max_size: int = 12) -> list[Decision]:
    """Decisions of one purpose: few distinct days (so ties happen), unique arrival numbers, and
    grants with validities short enough that some lapse before the next decision."""
    size = draw(st.integers(min_value=0, max_value=max_size))
    seqs = draw(st.lists(st.integers(min_value=1, max_value=10_000), min_size=size, max_size=size, unique=True))
    result = []
    for index, seq in enumerate(seqs):
        status = draw(st.sampled_from(STATUSES))
        collected = at(draw(st.integers(min_value=0, max_value=12)))
        expires = None
        if status == GRANTED:
            validity = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=6)))
            expires = None if validity is None else collected + timedelta(days=validity)
        result.append(Decision(f"rec_{index}", seq, status, collected, expires))
    return result


SEGMENTS = st.sampled_from(["a", "b", "ab", "a_b"])
PURPOSE_KEYS = st.lists(SEGMENTS, min_size=1, max_size=3).map(".".join)


NOW = st.integers(min_value=-3, max_value=3).map(at)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, dict[str, State], datetime]:
    """A purpose, states for some of its ancestors and for unrelated keys, and a moment; expiries
    and the moment share a small range so that "expires exactly now" happens."""
    purpose = draw(PURPOSE_KEYS)
    ancestry = [".".join(purpose.split(".")[:end]) for end in range(1, purpose.count(".") + 2)]
    keys = set(draw(st.lists(st.sampled_from(ancestry), max_size=3))) | set(draw(st.lists(PURPOSE_KEYS, max_size=4)))
    states = {}
    for index, key in enumerate(sorted(keys)):
        status = draw(st.sampled_from(STATUSES))
        expires = draw(st.one_of(st.none(), NOW))
        started = at(-10 - index) if status == GRANTED else None
        states[key] = State(status, f"rec_{index}", at(-20), expires, started)
    return purpose, states, draw(NOW)


# -- derive ----------------------------------------------------------------------------------------


def test_derive_of_no_decisions_is_no_state() -> None:
    assert derive([]) is None


@no_deadline
@given(decision_lists())
def test_derive_takes_the_decision_with_the_greatest_collected_at_then_arrival(decisions: list[Decision]) -> None:
    state = derive(decisions)
    if not decisions:
        assert state is None
        return
    deciding = max(decisions, key=lambda d: (d.collected_at, d.seq))
    assert state is not None
    assert (state.status, state.record_id, state.collected_at, state.expires_at) == (
        deciding.status,
        deciding.record_id,
        deciding.collected_at,
        deciding.expires_at,
    )


@no_deadline
@given(decision_lists())
def test_derive_agrees_with_the_model_including_grant_start(decisions: list[Decision]) -> None:
    state = derive(decisions)
    expected = model_derive(decisions)
    if expected is None:
        assert state is None
    else:
        assert state is not None
        assert (
            ModelState(state.status, state.record_id, state.collected_at, state.expires_at, state.grant_started_at)
            == expected
        )


@no_deadline
@given(decision_lists())
def test_grant_started_at_is_set_exactly_when_granted_and_is_one_of_the_grants(decisions: list[Decision]) -> None:
    state = derive(decisions)
    if state is None:
        return
    if state.status != GRANTED:
        assert state.grant_started_at is None
    else:
        assert state.grant_started_at is not None
        assert state.grant_started_at <= state.collected_at
        assert state.grant_started_at in {d.collected_at for d in decisions if d.status == GRANTED}


@no_deadline
@given(st.data())
def test_derive_does_not_depend_on_the_order_of_its_input(data: st.DataObject) -> None:
    decisions = data.draw(decision_lists())
    shuffled = data.draw(st.permutations(decisions))
    assert derive(shuffled) == derive(decisions)


@no_deadline
@given(decision_lists(), st.sampled_from([DENIED, WITHDRAWN]))
def test_ending_a_grant_then_regranting_starts_a_new_grant(decisions: list[Decision], ending: str) -> None:
    horizon = max((d.collected_at for d in decisions), default=T0)
    top = max((d.seq for d in decisions), default=0)
    ended = [*decisions, Decision("rec_end", top + 1, ending, horizon + timedelta(days=1), None)]
    state = derive(ended)
    assert state is not None
    assert (state.status, state.grant_started_at) == (ending, None)

    regrant_at = horizon + timedelta(days=2)
    regrant = Decision("rec_again", top + 2, GRANTED, regrant_at, regrant_at + timedelta(days=30))
    state = derive([*ended, regrant])
    assert state is not None
    assert (state.status, state.grant_started_at) == (GRANTED, regrant_at)


def test_renewal_before_expiry_keeps_the_grant_start() -> None:
    first = Decision("rec_1", 1, GRANTED, at(0), at(10))
    renewal = Decision("rec_2", 2, GRANTED, at(9), at(19))
    state = derive([first, renewal])
    assert state is not None
    assert (state.record_id, state.grant_started_at, state.expires_at) == ("rec_2", at(0), at(19))


def test_regrant_after_expiry_starts_a_new_grant() -> None:
    first = Decision("rec_1", 1, GRANTED, at(0), at(10))
    regrant = Decision("rec_2", 2, GRANTED, at(10), at(20))  # exactly at expiry: the first had lapsed
    state = derive([first, regrant])
    assert state is not None
    assert state.grant_started_at == at(10)


def test_late_grant_collected_before_a_withdrawal_does_not_win() -> None:
    withdrawal = Decision("rec_w", 1, WITHDRAWN, at(2), None)
    late_grant = Decision("rec_g", 2, GRANTED, at(1), at(30))
    state = derive([withdrawal, late_grant])
    assert state is not None
    assert (state.status, state.record_id, state.grant_started_at) == (WITHDRAWN, "rec_w", None)


def test_ties_in_collected_at_resolve_by_arrival() -> None:
    grant = Decision("rec_g", 1, GRANTED, at(1), at(30))
    withdrawal = Decision("rec_w", 2, WITHDRAWN, at(1), None)
    state = derive([withdrawal, grant])
    assert state is not None
    assert state.status == WITHDRAWN
    regrant = Decision("rec_g2", 3, GRANTED, at(1), at(30))
    state = derive([grant, regrant, withdrawal])
    assert state is not None
    assert (state.status, state.record_id, state.grant_started_at) == (GRANTED, "rec_g2", at(1))


# -- effective -------------------------------------------------------------------------------------


@no_deadline
@given(scenarios(), st.booleans())
def test_effective_agrees_with_the_model(scenario: tuple[str, dict[str, State], datetime], needs_consent: bool) -> None:
    purpose, states, now = scenario
    assert effective(purpose, needs_consent, states, now) == model_effective(purpose, needs_consent, states, now)


@no_deadline
@given(scenarios())
def test_records_outside_a_purposes_ancestry_never_change_its_effective_status(
    scenario: tuple[str, dict[str, State], datetime],
) -> None:
    purpose, states, now = scenario
    related = {key: s for key, s in states.items() if is_at_or_above(key, purpose)}
    assert effective(purpose, True, states, now) == effective(purpose, True, related, now)


@no_deadline
@given(scenarios())
def test_in_force_means_granted_and_unexpired(scenario: tuple[str, dict[str, State], datetime]) -> None:
    purpose, states, now = scenario
    verdict = effective(purpose, True, states, now)
    assert verdict.in_force == (verdict.status == GRANTED)
    if verdict.in_force:
        assert verdict.decided_by is not None
        deciding = states[verdict.decided_by]
        assert deciding.expires_at is None or deciding.expires_at > now
        assert verdict.grant_started_at == deciding.grant_started_at
    else:
        assert verdict.grant_started_at is None


def granted(days_left: float = 30) -> State:
    return State(GRANTED, "rec_g", at(-1), at(days_left), at(-1))


def test_consent_to_a_parent_covers_its_children() -> None:
    verdict = effective("personalize.content.profiling", True, {"personalize": granted()}, T0)
    assert (verdict.in_force, verdict.decided_by, verdict.grant_started_at) == (True, "personalize", at(-1))


def test_a_childs_own_withdrawal_beats_the_parents_grant() -> None:
    states = {"personalize": granted(), "personalize.content.profiling": State(WITHDRAWN, "rec_w", at(-2), None, None)}
    verdict = effective("personalize.content.profiling", True, states, T0)
    assert (verdict.in_force, verdict.status, verdict.decided_by) == (False, WITHDRAWN, "personalize.content.profiling")
    assert effective("personalize.content.limited", True, states, T0).in_force


def test_consent_to_a_child_does_not_cover_its_parent_or_siblings() -> None:
    states = {"personalize.content.profiling": granted()}
    assert effective("personalize.content.profiling", True, states, T0).in_force
    for other in ("personalize.content", "personalize", "personalize.content.limited"):
        assert effective(other, True, states, T0) == Effective(False, "none", None, None)


def test_a_key_that_merely_starts_with_a_purposes_name_is_not_its_child() -> None:
    assert not effective("personalized", True, {"personalize": granted()}, T0).in_force
    assert not effective("personalize.contents", True, {"personalize.content": granted()}, T0).in_force


def test_a_grant_is_expired_at_its_expiry_instant() -> None:
    states = {"analytics": granted(days_left=0)}
    assert effective("analytics", True, states, at(-0.001)).in_force
    verdict = effective("analytics", True, states, T0)
    assert (verdict.in_force, verdict.status) == (False, "expired")


def test_an_expired_parent_grant_covers_no_child() -> None:
    verdict = effective("personalize.content", True, {"personalize": granted(days_left=-1)}, T0)
    assert (verdict.in_force, verdict.status, verdict.decided_by) == (False, "expired", "personalize")


def test_a_childs_lapsed_grant_leaves_it_to_a_parents_grant_in_force() -> None:
    states = {"personalize": granted(), "personalize.content": granted(days_left=-1)}
    verdict = effective("personalize.content.profiling", True, states, T0)
    assert (verdict.in_force, verdict.decided_by) == (True, "personalize")
    # ...but not to a parent's refusal, and with nothing above it stays expired
    states["personalize"] = State(WITHDRAWN, "rec_w", at(-1), None, None)
    verdict = effective("personalize.content", True, states, T0)
    assert (verdict.in_force, verdict.status, verdict.decided_by) == (False, WITHDRAWN, "personalize")
    verdict = effective("personalize.content", True, {"personalize.content": granted(days_left=-1)}, T0)
    assert (verdict.in_force, verdict.status, verdict.decided_by) == (False, "expired", "personalize.content")


def test_purposes_not_resting_on_consent_are_in_force_whatever_the_records_say() -> None:
    states = {"essential": State(WITHDRAWN, "rec_w", at(-1), None, None)}
    assert effective("essential.service", False, states, T0) == Effective(True, "not_required", None, None)
