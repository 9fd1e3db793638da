"""``explain=true``: privacy and admin clients see what a view left out and why, and why a default
view is a default; readers may not ask."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from profilestore.runtime import Runtime
from tests.conftest import Keys
from tests.views.support import VIEW_PURPOSE, Store, days_ago, get_view, restrict, set_policy, values


def _explained(api: TestClient, keys: Keys, subject: str, role: str = "privacy") -> dict[str, Any]:
    answer = get_view(api, keys.header(role), subject, explain="true")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_explain_lists_what_was_left_out_with_reasons(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(3, {"category": "Golf", "brand": "Acme"}, type="product_viewed")
    ada.prefer("favourite_category", "Chess")
    ada.consent({"personalize": "withdrawn"})
    ada.consent({"personalize": "granted"})
    ada.events(2, {"category": "Tennis"}, type="purchase")
    ada.events(1, {"category": "Tennis"}, type="page_viewed")
    ada.prefer("preferred_channel", "sms", category="user.preferences.channel")
    set_policy(api, keys, VIEW_PURPOSE, ["user.behavior.browsing_history", "user.preferences.interests"])

    for role in ("privacy", "admin"):
        body = _explained(api, keys, subject, role)

        assert body["personalised"] is True
        assert values(body) == ["tennis"]
        assert body["signals"]["category"][0]["evidence"] == 1
        assert body["preferences"] == []
        explanation = body["explain"]
        assert explanation["reason"] == "personalised"
        left = {(e["section"], e["dimension"], e["category"], e["reason"]): e["count"] for e in explanation["left_out"]}
        assert left == {
            ("signals", "category", "user.behavior.browsing_history", "collected_before_consent"): 3,
            ("signals", "brand", "user.behavior.browsing_history", "collected_before_consent"): 3,
            ("signals", "category", "user.behavior.purchase_history", "category_not_in_policy"): 2,
            ("preferences", None, None, "collected_before_consent"): 1,
            ("preferences", None, None, "category_not_in_policy"): 1,
        }


def test_explain_names_no_personal_values(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(2, {"category": "Secretcategory"}, type="purchase")
    set_policy(api, keys, VIEW_PURPOSE, ["user.behavior.browsing_history"])

    answer = get_view(api, keys.header("privacy"), subject, explain="true")
    unexplained = get_view(api, keys.header("privacy"), subject)

    assert answer.json()["explain"]["left_out"]
    assert "secretcategory" not in answer.text.lower()
    assert unexplained.json()["explain"] is None


def test_a_default_view_explains_why_it_is_one(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    set_policy(api, keys, "personalize", ["user.behavior", "user.preferences"], consent_valid_days=1)
    withdrawn = Store(api, keys, {"email": "withdrawn@example.com"})
    withdrawn.consent({"personalize": "granted"})
    withdrawn.events(1, {"category": "Golf"})
    child = Store(api, keys, {"email": "child@example.com"})
    child.consent({"personalize": "granted"})
    child.events(1, {"category": "Golf"})
    marketing_only = Store(api, keys, {"email": "marketing@example.com"})
    restricted = Store(api, keys, {"email": "restricted@example.com"})
    restricted_id = restricted.consent({"personalize": "granted"})
    restricted.events(1, {"category": "Golf"})
    restrict(runtime, restricted_id)
    expected = {
        "sub_0000000000000000000000": "unknown_subject",
        withdrawn.consent({"personalize": "withdrawn"}): "consent_withdrawn",
        child.consent({VIEW_PURPOSE: "withdrawn"}): "consent_withdrawn",
        Store(api, keys, {"email": "denied@example.com"}).consent({"personalize": "denied"}): "consent_denied",
        marketing_only.consent({"marketing": "granted"}): "consent_none",
        Store(api, keys, {"email": "expired@example.com"}).consent(
            {"personalize": "granted"}, at=days_ago(2)
        ): "consent_expired",
        restricted_id: "restricted",
    }
    marketing_only.events(1, {"category": "Golf"})
    marketing_only.prefer("favourite_category", "Chess")
    # What each of them holds, all of it left out of the view for the view's one reason.
    golf = {("signals", "category", "user.behavior.browsing_history"): 1}
    held = {"consent_withdrawn": golf, "restricted": golf, "consent_none": {**golf, ("preferences", None, None): 1}}

    for subject, reason in expected.items():
        body = _explained(api, keys, subject)

        assert body["personalised"] is False, reason
        assert body["signals"] == {} and body["preferences"] == []
        assert body["explain"]["reason"] == reason
        left_out = body["explain"]["left_out"]
        assert {e["reason"] for e in left_out} <= {reason}
        assert {(e["section"], e["dimension"], e["category"]): e["count"] for e in left_out} == held.get(reason, {})
        # the reader's answer says none of it
        reader = get_view(api, keys.header("reader"), subject)
        assert reader.status_code == 200
        assert reader.json()["explain"] is None
        assert reason not in reader.text


def test_a_reader_asking_for_explain_gets_403(api: TestClient, keys: Keys) -> None:
    ada = Store(api, keys)
    subject = ada.consent({"personalize": "granted"})
    ada.events(1, {"category": "Golf"})

    by_id = get_view(api, keys.header("reader"), subject, explain="true")
    posted = api.post(
        "/v1/views",
        headers=keys.header("reader"),
        json={"purpose": VIEW_PURPOSE, "subject_id": subject, "explain": True},
    )
    unknown = get_view(api, keys.header("reader"), "sub_0000000000000000000000", explain="true")

    for answer in (by_id, posted, unknown):
        assert answer.status_code == 403, answer.text
        assert set(answer.json()) == {"error"}
        assert "golf" not in answer.text.lower()
