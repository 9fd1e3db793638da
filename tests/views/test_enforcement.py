"""Purpose before data: who may read a view, whose consent lets it be personalised, and exactly
which evidence it may count (category in the purpose's policy, collected under the grant in force).
And no existence oracle: unknown, non-consenting and restricted people look the same to a reader."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from profilestore.app import create_app
from profilestore.auth import service as clients
from profilestore.kit.time import utcnow
from profilestore.runtime import Runtime
from tests.conftest import Keys
from tests.views.support import (
    VIEW_PURPOSE,
    Store,
    bearer,
    days_ago,
    get_view,
    reader_key,
    restrict,
    set_policy,
    values,
    view,
    without_scores,
)


def test_a_reader_reads_the_same_view_by_subject_id_and_by_identifiers(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys, {"email": "ada@example.com"})
    subject = ada.consent({"personalize": "granted"})
    ada.events(3, {"category": "Tennis"})

    by_id = view(api, keys, subject)
    by_identifiers = api.post(
        "/v1/views", headers=keys.header("reader"), json={"purpose": VIEW_PURPOSE, "identifiers": ada.identifiers}
    )
    by_id_posted = api.post(
        "/v1/views", headers=keys.header("reader"), json={"purpose": VIEW_PURPOSE, "subject_id": subject}
    )

    assert by_id["personalised"] is True
    assert by_id["subject_id"] == subject
    assert by_id["purpose"] == VIEW_PURPOSE
    assert values(by_id) == ["tennis"]
    for answer in (by_identifiers, by_id_posted):
        assert answer.status_code == 200, answer.text
        assert without_scores(answer.json()) == without_scores(by_id)
        assert answer.json()["subject_id"] == subject


def test_a_view_body_names_the_subject_one_way_only(api: TestClient, keys: Keys) -> None:
    both = {"purpose": VIEW_PURPOSE, "subject_id": "sub_x", "identifiers": {"email": "ada@example.com"}}
    neither = {"purpose": VIEW_PURPOSE}
    for body in (both, neither):
        answer = api.post("/v1/views", headers=keys.header("reader"), json=body)
        assert answer.status_code == 422, answer.text


def test_a_reader_not_allowed_for_the_purpose_gets_403_and_no_data(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted", "marketing": "granted", "analytics": "granted"})
    ada.events(2, {"category": "Tennis"})

    for purpose in ("marketing.communications.email", "personalize", "analytics.reporting", "marketing"):
        by_id = get_view(api, keys.header("reader"), subject, purpose)
        posted = api.post(
            "/v1/views", headers=keys.header("reader"), json={"purpose": purpose, "identifiers": ada.identifiers}
        )

        for answer in (by_id, posted):
            assert answer.status_code == 403, (purpose, answer.text)
            body = answer.json()
            assert set(body) == {"error"}
            assert body["error"]["code"] == "forbidden"
            assert "tennis" not in answer.text.lower()
            assert subject not in answer.text


def test_a_reader_may_read_for_purposes_beneath_its_own(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(2, {"category": "Tennis"})

    body = view(api, keys, subject, "personalize.content.profiling")

    assert body["personalised"] is True
    assert values(body) == ["tennis"]


def test_clients_of_other_roles_may_not_read_views(api: TestClient, keys: Keys) -> None:
    subject = Store(api, keys).consent({"personalize": "granted"})
    answer = get_view(api, keys.header("collector"), subject)
    assert answer.status_code == 403, answer.text
    assert get_view(api, {}, subject).status_code == 401


def test_the_key_is_judged_before_the_parameters(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    """Views look their caller's key up in the route's own database work; a request refused
    before the route runs (FastAPI's validation) must still be refused for its key first."""
    revoked = reader_key(runtime, VIEW_PURPOSE, name="revoked-reader")
    with runtime.db.transaction() as session:
        clients.revoke_client(session, clients.authenticate(session, revoked).client_id)  # type: ignore[union-attr]
    callers = {
        "none": ({}, 401),
        "unknown": (bearer("psk_" + "x" * 43), 401),
        "revoked": (bearer(revoked), 401),
        "collector": (keys.header("collector"), 403),
        "reader": (keys.header("reader"), 422),
    }
    subject_path = "/v1/subjects/sub_0000000000000000000000/view"
    bad_requests = {
        "no purpose": lambda headers: api.get(subject_path, headers=headers),
        "limit not a number": lambda headers: api.get(
            subject_path, headers=headers, params={"purpose": VIEW_PURPOSE, "limit": "many"}
        ),
        "unknown section": lambda headers: api.get(
            subject_path, headers=headers, params={"purpose": VIEW_PURPOSE, "include": "everything"}
        ),
        "body not an object": lambda headers: api.post("/v1/views", headers=headers, json=[VIEW_PURPOSE]),
        "body naming nobody": lambda headers: api.post("/v1/views", headers=headers, json={"purpose": VIEW_PURPOSE}),
    }
    wrong = []
    for request, send in bad_requests.items():
        for caller, (headers, expected) in callers.items():
            answer = send(headers)
            if answer.status_code != expected:
                wrong.append(f"{request}, key {caller}: {answer.status_code} {answer.text}")
    assert not wrong, "\n".join(wrong)

    answer = get_view(api, bearer(revoked), "sub_0000000000000000000000")
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_an_unknown_purpose_is_refused_naming_the_field(api: TestClient, keys: Keys) -> None:
    answer = get_view(api, keys.header("reader"), "sub_0000000000000000000000", "personalize.nonsense")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "purpose"


def test_a_purpose_resting_on_legitimate_interest_is_personalised_without_a_grant(api: TestClient, keys: Keys) -> None:
    set_policy(api, keys, VIEW_PURPOSE, ["user.behavior"], legal_basis="legitimate_interest")
    ada = Store(api, keys)
    subject = ada.consent({"marketing": "denied"})
    ada.events(2, {"category": "Tennis"})

    body = view(api, keys, subject)

    assert body["personalised"] is True
    assert values(body) == ["tennis"]
    assert body["consent"] == {"in_force": True, "basis": "legitimate_interest", "granted_since": None}


def test_a_policy_without_user_preferences_shows_no_preferences(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.prefer("favourite_category", "Golf")
    ada.events(1, {"category": "Tennis"})
    before = view(api, keys, subject)
    assert [p["key"] for p in before["preferences"]] == ["favourite_category"]
    assert values(before) == ["tennis", "golf"]

    set_policy(api, keys, VIEW_PURPOSE, ["user.behavior"])
    after = view(api, keys, subject)

    assert after["personalised"] is True
    assert after["preferences"] == []
    assert values(after) == ["tennis"]
    assert "golf" not in str(after).lower()


def test_a_policy_without_browsing_history_drops_those_signals_and_events(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(3, {"category": "Tennis"}, type="product_viewed")  # browsing history
    ada.events(1, {"category": "Golf"}, type="purchase")  # purchase history
    assert sorted(values(view(api, keys, subject))) == ["golf", "tennis"]

    set_policy(api, keys, VIEW_PURPOSE, ["user.behavior.purchase_history", "user.preferences"])
    after = view(api, keys, subject, include="recent_events")

    assert values(after) == ["golf"]
    assert [(e["type"], e["category"]) for e in after["recent_events"]] == [
        ("purchase", "user.behavior.purchase_history")
    ]


def test_withdraw_then_regrant_shows_nothing_collected_before_the_withdrawal(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    # marketing stays granted throughout, so events keep being collected while personalize is withdrawn
    subject = ada.consent({"personalize": "granted", "marketing": "granted"})
    ada.events(4, {"category": "Golf", "brand": "Acme"})
    ada.prefer("favourite_category", "Chess")
    assert values(view(api, keys, subject)) == ["golf", "chess"]

    ada.consent({"personalize": "withdrawn"})
    ada.events(2, {"category": "Sailing"})  # collected under marketing while personalize is out of force
    ada.consent({"personalize": "granted"})
    ada.events(1, {"category": "Tennis"})

    body = view(api, keys, subject, include="recent_events")

    assert body["personalised"] is True
    assert body["signals"] == {"category": body["signals"]["category"]}  # no brand: Acme came before
    assert values(body) == ["tennis"]
    assert body["signals"]["category"][0]["evidence"] == 1
    assert body["preferences"] == []
    assert [e["properties"] for e in body["recent_events"]] == [{"category": "Tennis"}]
    # a declaration made under the new grant counts again
    ada.prefer("favourite_category", "Chess")
    assert values(view(api, keys, subject)) == ["tennis", "chess"]


def test_a_withdrawal_of_a_child_purpose_beats_a_grant_of_its_parent(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(3, {"category": "Tennis"})
    ada.consent({"personalize.content": "withdrawn"})

    for purpose in (VIEW_PURPOSE, "personalize.content.profiling"):
        body = view(api, keys, subject, purpose)
        assert body["personalised"] is False, purpose
        assert body["signals"] == {}
    # the parent itself is still granted: an admin reading for it sees the data
    parent = get_view(api, keys.header("admin"), subject, "personalize")
    assert parent.status_code == 200
    assert values(parent.json()) == ["tennis"]


def test_a_grant_of_a_child_stands_when_its_parent_is_withdrawn(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted", VIEW_PURPOSE: "granted"})
    ada.events(3, {"category": "Tennis"})
    ada.consent({"personalize": "withdrawn"})

    body = view(api, keys, subject)

    assert body["personalised"] is True
    assert values(body) == ["tennis"]


def test_granting_a_child_while_its_parent_covers_it_keeps_the_history(api: TestClient, keys: Keys) -> None:
    """An anonymous visitor grants `personalize` on the cookie banner and browses; at signup the
    form grants `personalize.content.profiling` itself. Nothing was withdrawn, denied or expired:
    profiling was in force the whole time, so the browsing collected under the banner's grant stays
    usable for it."""
    visitor = Store(api, keys, {"anonymous_id": "cookie-9"})
    subject = visitor.consent({"personalize": "granted"})
    visitor.events(3, {"category": "Tennis"})
    assert values(view(api, keys, subject, "personalize.content.profiling")) == ["tennis"]

    member = Store(api, keys, {"anonymous_id": "cookie-9", "email": "ada@example.com"})
    assert member.consent({"personalize.content.profiling": "granted"}) == subject

    assert values(view(api, keys, subject, "personalize.content")) == ["tennis"]
    assert values(view(api, keys, subject, "personalize.content.profiling")) == ["tennis"]


def test_expired_consent_gives_the_default_view_and_a_new_grant_starts_from_nothing(
    api: TestClient, keys: Keys
) -> None:
    set_policy(api, keys, "personalize", ["user.behavior", "user.preferences"], consent_valid_days=1)
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"}, at=days_ago(2))
    ada.consent({"marketing": "granted"})  # keeps collection going: the data exists, the view may not use it
    ada.events(3, {"category": "Tennis"})

    fresh = Store(api, keys, {"email": "fresh@example.com"})
    fresh_id = fresh.consent({"personalize": "granted"}, at=utcnow() - timedelta(hours=20))
    fresh.events(1, {"category": "Tennis"})

    body = view(api, keys, subject)
    unexpired = view(api, keys, fresh_id)

    assert body["personalised"] is False
    assert body["signals"] == {} and body["preferences"] == []
    assert body["consent"]["in_force"] is False
    assert unexpired["personalised"] is True  # the same short validity, not yet run out
    assert (unexpired["consent"]["in_force"], unexpired["consent"]["basis"]) == (True, "granted")
    # a grant after the expiry starts from nothing: what marketing collected meanwhile stays out
    ada.consent({"personalize": "granted"})
    regranted = view(api, keys, subject)
    assert regranted["personalised"] is True
    assert regranted["signals"] == {}


def test_a_childs_lapsed_grant_leaves_the_view_to_its_parents_grant(api: TestClient, keys: Keys) -> None:
    """A lapse is no refusal: the person's grant of the parent, given since, covers the child again
    (only what was collected under that grant)."""
    set_policy(api, keys, VIEW_PURPOSE, ["user.behavior", "user.preferences"], consent_valid_days=1)
    ada = Store(api, keys)
    subject = ada.consent({VIEW_PURPOSE: "granted"}, at=days_ago(2))
    ada.consent({"marketing": "granted"}, at=days_ago(2))  # keeps collection going meanwhile
    ada.events(2, {"category": "Golf"})
    assert view(api, keys, subject)["personalised"] is False  # lapsed, nothing above it

    ada.consent({"personalize": "granted"})
    ada.events(1, {"category": "Tennis"})

    body = view(api, keys, subject)
    assert body["personalised"] is True
    assert values(body) == ["tennis"]  # what came before this grant stays out


def test_a_withdrawal_or_policy_change_shows_on_the_very_next_read_in_this_and_another_process(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(2, {"category": "Tennis"})
    other_runtime = Runtime.from_settings(runtime.settings)
    try:
        with TestClient(create_app(runtime=other_runtime)) as other:
            assert view(other, keys, subject)["personalised"] is True  # both processes have read it
            assert view(api, keys, subject)["personalised"] is True

            ada.consent({"personalize": "withdrawn"})

            assert view(api, keys, subject)["personalised"] is False
            assert view(other, keys, subject)["personalised"] is False

            Store(other, keys).consent({"personalize": "granted"})  # re-granted through the other process
            again = view(api, keys, subject)
            assert again["personalised"] is True
            assert again["signals"] == {}

            ada.events(1, {"category": "Golf"})
            assert values(view(other, keys, subject)) == ["golf"]
            set_policy(api, keys, VIEW_PURPOSE, ["user.preferences"])  # an operator's change, made here
            assert view(other, keys, subject)["signals"] == {}
    finally:
        other_runtime.close()


def _default_views(api: TestClient, keys: Keys, runtime: Runtime) -> dict[str, dict[str, str]]:
    """Identifiers and subject ids of people a reader must not tell apart."""
    withdrawn = Store(api, keys, {"email": "withdrawn@example.com"})
    withdrawn_id = withdrawn.consent({"personalize": "granted"})
    withdrawn.events(3, {"category": "Tennis"})
    withdrawn.prefer("favourite_category", "Golf")
    withdrawn.consent({"personalize": "withdrawn"})

    denied = Store(api, keys, {"email": "denied@example.com"})
    denied_id = denied.consent({"personalize": "denied", "marketing": "granted"})
    denied.events(2, {"category": "Tennis"})

    restricted = Store(api, keys, {"email": "restricted@example.com"})
    restricted_id = restricted.consent({"personalize": "granted"})
    restricted.events(3, {"category": "Tennis"})
    restricted.prefer("favourite_category", "Golf")
    assert view(api, keys, restricted_id)["personalised"] is True
    restrict(runtime, restricted_id)

    return {
        "unknown": {"id": "sub_0000000000000000000000", "email": "nobody@example.com"},
        "withdrawn": {"id": withdrawn_id, "email": "withdrawn@example.com"},
        "denied": {"id": denied_id, "email": "denied@example.com"},
        "restricted": {"id": restricted_id, "email": "restricted@example.com"},
    }


def test_unknown_non_consenting_and_restricted_subjects_get_byte_identical_answers(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    people = _default_views(api, keys, runtime)

    for include in (None, "recent_events"):
        params = {"include": include} if include else {}
        body_extra = {"include": [include]} if include else {}
        by_id = {name: get_view(api, keys.header("reader"), p["id"], **params) for name, p in people.items()}
        by_identifiers = {
            name: api.post(
                "/v1/views",
                headers=keys.header("reader"),
                json={"purpose": VIEW_PURPOSE, "identifiers": {"email": p["email"]}, **body_extra},
            )
            for name, p in people.items()
        }
        by_posted_id = {
            name: api.post(
                "/v1/views",
                headers=keys.header("reader"),
                json={"purpose": VIEW_PURPOSE, "subject_id": p["id"], **body_extra},
            )
            for name, p in people.items()
        }

        for answers in (by_id, by_identifiers, by_posted_id):
            assert {a.status_code for a in answers.values()} == {200}
            assert len({a.content for a in answers.values()}) == 1, {n: a.text for n, a in answers.items()}
        default = by_id["unknown"].json()
        assert default["personalised"] is False
        assert default["subject_id"] is None
        assert default["signals"] == {} and default["preferences"] == []
        assert default["consent"] == {"in_force": False, "basis": None, "granted_since": None}
        assert default["recent_events"] == ([] if include else None)
        assert by_id["unknown"].content == by_identifiers["unknown"].content == by_posted_id["unknown"].content


def test_naming_two_people_at_once_does_not_reveal_that_both_exist(api: TestClient, keys: Keys) -> None:
    """A reader that knows one visitor's cookie must not learn, by adding an email to it, whether
    that email belongs to someone in the store: the answer for a known email matches the one for
    an unknown email."""
    visitor = Store(api, keys, {"anonymous_id": "cookie-1"})
    visitor.consent({"personalize": "granted"})
    Store(api, keys, {"email": "someone@example.com"}).consent({"personalize": "granted"})

    def probe(email: str) -> tuple[int, object]:
        answer = api.post(
            "/v1/views",
            headers=keys.header("reader"),
            json={"purpose": VIEW_PURPOSE, "identifiers": {"anonymous_id": "cookie-1", "email": email}},
        )
        return answer.status_code, answer.json().get("personalised", "error")

    assert probe("someone@example.com") == probe("nobody@example.com")


def test_a_reader_allowed_for_marketing_reads_marketing_views(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    marketer = bearer(reader_key(runtime, "marketing"))
    ada = Store(api, keys)
    subject = ada.consent({"marketing": "granted"})
    ada.events(2, {"category": "Tennis"})

    email_view = get_view(api, marketer, subject, "marketing.communications.email")
    personal = get_view(api, marketer, subject, VIEW_PURPOSE)

    assert email_view.status_code == 200
    assert values(email_view.json()) == ["tennis"]
    assert personal.status_code == 403
