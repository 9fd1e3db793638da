"""Admin API for the vocabulary: purposes and their policies, data categories, notices."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient

from profilestore.app import create_app
from profilestore.runtime import Runtime
from tests.conftest import Keys, row_counts


def _purposes(api: TestClient, keys: Keys, role: str = "reader") -> dict[str, dict[str, Any]]:
    answer = api.get("/v1/purposes", headers=keys.header(role))
    assert answer.status_code == 200, answer.text
    return {p["key"]: p for p in answer.json()}


def _put(api: TestClient, keys: Keys, key: str, **body: Any) -> Any:
    return api.put(f"/v1/purposes/{key}", headers=keys.header("admin"), json={"name": "A purpose", **body})


# -- purposes --------------------------------------------------------------------------------------


def test_the_default_purposes_are_the_fideslang_data_uses(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    purposes = _purposes(api, keys)
    for key in ("personalize.content.profiling", "marketing.communications.email", "analytics.reporting"):
        assert key in purposes and purposes[key]["is_default"] is True
    profiling = purposes["personalize.content.profiling"]
    assert profiling["parent"] == "personalize.content"
    assert profiling["legal_basis"] == "consent"
    assert profiling["retention_days"] == runtime.settings.default_retention_days
    assert profiling["consent_valid_days"] == runtime.settings.default_consent_valid_days
    assert {"user.behavior", "user.preferences"} <= set(profiling["categories"])
    assert purposes["essential.legal_obligation"]["legal_basis"] == "legal_obligation"
    assert purposes["essential.fraud_detection"]["legal_basis"] == "legitimate_interest"
    assert purposes["essential"]["legal_basis"] == "contract"
    assert purposes["essential"]["categories"] == [], "a purpose without a default policy may use nothing"
    for key, purpose in purposes.items():
        assert purpose["parent"] == (key.rsplit(".", 1)[0] if "." in key else None)
        assert purpose["parent"] is None or purpose["parent"] in purposes


def test_one_purpose_reads_back(api: TestClient, keys: Keys) -> None:
    answer = api.get("/v1/purposes/analytics.reporting", headers=keys.header("collector"))
    assert answer.status_code == 200
    assert answer.json()["key"] == "analytics.reporting"
    missing = api.get("/v1/purposes/analytics.nope", headers=keys.header("collector"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_custom_purpose_is_created_beneath_its_parent(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    answer = _put(
        api,
        keys,
        "personalize.email_digest",
        name="Email digest",
        categories=["user.preferences.channel", "user.behavior.browsing_history", "user.preferences.channel"],
    )
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["key"] == "personalize.email_digest"
    assert made["parent"] == "personalize"
    assert made["is_default"] is False
    assert made["legal_basis"] == "consent"
    assert made["categories"] == ["user.behavior.browsing_history", "user.preferences.channel"]
    assert made["retention_days"] == runtime.settings.default_retention_days
    assert _purposes(api, keys)["personalize.email_digest"] == made


def test_a_custom_purpose_may_name_its_parent_explicitly(api: TestClient, keys: Keys) -> None:
    answer = _put(api, keys, "personalize.email_digest", parent="personalize")
    assert answer.status_code == 200, answer.text
    assert answer.json()["parent"] == "personalize"


def test_a_custom_purpose_can_have_children_of_its_own(api: TestClient, keys: Keys) -> None:
    assert _put(api, keys, "personalize.email_digest").status_code == 200
    child = _put(api, keys, "personalize.email_digest.weekly", categories=["user.preferences"])
    assert child.status_code == 200, child.text
    assert child.json()["parent"] == "personalize.email_digest"


BAD_PURPOSES: list[tuple[str, dict[str, Any], str, str]] = [
    ("nope.child", {}, "parent", "unknown_purpose"),
    ("personalize.a.b", {}, "parent", "unknown_purpose"),
    ("personalize.email_digest", {"parent": "marketing"}, "parent", "invalid"),
    ("personalize.email_digest", {"categories": ["user.nope"]}, "categories", "unknown_category"),
    ("personalize.email_digest", {"categories": ["user.behavior", "user.nope"]}, "categories", "unknown_category"),
    ("Personalize.Digest", {}, "key", "invalid"),
    ("personalize.email-digest", {}, "key", "invalid"),
    ("personalize..digest", {}, "key", "invalid"),
    ("personalize.1digest", {}, "key", "invalid"),
    ("personalize." + "x" * 200, {}, "key", "invalid"),
    ("personalize.email_digest", {"legal_basis": "because"}, "legal_basis", "invalid"),
    ("personalize.email_digest", {"retention_days": 0}, "retention_days", "invalid"),
    ("personalize.email_digest", {"colour": "red"}, "colour", "invalid"),
]


def test_a_bad_purpose_is_refused_naming_the_field_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    before = row_counts(runtime)
    for key, body, field, code in BAD_PURPOSES:
        answer = _put(api, keys, key, **body)
        assert answer.status_code == 422, (key, body, answer.text)
        assert (answer.json()["error"]["field"], answer.json()["error"]["code"]) == (field, code), (key, body)
    assert row_counts(runtime) == before


def test_an_unknown_category_is_named_in_the_message(api: TestClient, keys: Keys) -> None:
    answer = _put(api, keys, "personalize.email_digest", categories=["user.behavior", "user.nope"])
    assert "user.nope" in answer.json()["error"]["message"]


def test_a_default_purposes_policy_can_be_changed(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    answer = _put(
        api,
        keys,
        "analytics.reporting",
        name="Reporting",
        legal_basis="legitimate_interest",
        retention_days=90,
        consent_valid_days=180,
        categories=["user.behavior.browsing_history"],
    )
    assert answer.status_code == 200, answer.text
    changed = _purposes(api, keys)["analytics.reporting"]
    assert changed["legal_basis"] == "legitimate_interest"
    assert (changed["retention_days"], changed["consent_valid_days"]) == (90, 180)
    assert changed["categories"] == ["user.behavior.browsing_history"]
    assert changed["is_default"] is True
    assert changed["parent"] == "analytics"

    # Another process sees the change at once, and loading the defaults again does not undo it.
    runtime.migrate()
    other = Runtime.from_settings(runtime.settings)
    try:
        with TestClient(create_app(runtime=other)) as elsewhere:
            assert _purposes(elsewhere, keys)["analytics.reporting"] == changed
    finally:
        other.close()


def test_a_policy_can_be_emptied(api: TestClient, keys: Keys) -> None:
    answer = _put(api, keys, "personalize.content.profiling", categories=[])
    assert answer.status_code == 200
    assert _purposes(api, keys)["personalize.content.profiling"]["categories"] == []


# -- categories ------------------------------------------------------------------------------------


def _categories(api: TestClient, keys: Keys) -> dict[str, dict[str, Any]]:
    answer = api.get("/v1/categories", headers=keys.header("reader"))
    assert answer.status_code == 200
    return {c["key"]: c for c in answer.json()}


def test_the_default_categories_are_fideslangs_plus_declared_preferences(api: TestClient, keys: Keys) -> None:
    categories = _categories(api, keys)
    for key in ("user.behavior.browsing_history", "user.behavior.purchase_history", "user.contact.email"):
        assert categories[key]["is_default"] is True
    assert categories["user.preferences"]["parent"] == "user"
    assert categories["user.preferences.interests"]["parent"] == "user.preferences"
    assert categories["user.preferences.channel"]["parent"] == "user.preferences"


def test_a_category_is_added_beneath_an_existing_one(api: TestClient, keys: Keys) -> None:
    answer = api.put(
        "/v1/categories/user.preferences.colour", headers=keys.header("admin"), json={"name": "Favourite colours"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "key": "user.preferences.colour",
        "parent": "user.preferences",
        "name": "Favourite colours",
        "description": None,
        "is_default": False,
    }
    assert _categories(api, keys)["user.preferences.colour"]["name"] == "Favourite colours"

    renamed = api.put("/v1/categories/user.preferences.colour", headers=keys.header("admin"), json={"name": "Colours"})
    assert renamed.status_code == 200
    assert _categories(api, keys)["user.preferences.colour"]["name"] == "Colours"

    used = _put(api, keys, "personalize.email_digest", categories=["user.preferences.colour"])
    assert used.status_code == 200, "a purpose's policy may use the new category"


def test_a_category_must_sit_beneath_an_existing_one(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)
    for key in ["user.nope.colour", "colour", "User.Preferences.Colour", "user.preferences..x"]:
        answer = api.put(f"/v1/categories/{key}", headers=keys.header("admin"), json={"name": "x"})
        assert answer.status_code == 422, (key, answer.text)
        assert answer.json()["error"]["field"] == "key"
    assert row_counts(runtime) == before


def test_a_default_category_cannot_be_changed(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    original = _categories(api, keys)["user.contact.email"]
    before = row_counts(runtime)
    answer = api.put("/v1/categories/user.contact.email", headers=keys.header("admin"), json={"name": "Mail"})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "conflict"
    assert _categories(api, keys)["user.contact.email"] == original
    assert row_counts(runtime) == before


# -- notices ---------------------------------------------------------------------------------------

NEWSLETTER = {
    "key": "newsletter",
    "version": 1,
    "text": "We send you a weekly email — unsubscribe any time. Ça va?",
    "purposes": ["marketing.communications.email", "personalize.content"],
}


def _publish(api: TestClient, keys: Keys, **changes: Any) -> Any:
    return api.post("/v1/notices", headers=keys.header("admin"), json={**NEWSLETTER, **changes})


def test_publishing_a_notice_returns_the_hash_of_its_text(api: TestClient, keys: Keys) -> None:
    answer = _publish(api, keys)
    assert answer.status_code == 201, answer.text
    notice = answer.json()
    assert notice["text_sha256"] == hashlib.sha256(NEWSLETTER["text"].encode("utf-8")).hexdigest()
    assert (notice["key"], notice["version"]) == ("newsletter", 1)
    assert notice["purposes"] == sorted(NEWSLETTER["purposes"])
    assert "text" not in notice


def test_publishing_the_same_notice_again_is_a_200_no_op(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    first = _publish(api, keys)
    before = row_counts(runtime)
    again = _publish(api, keys, purposes=list(reversed(NEWSLETTER["purposes"])))
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert row_counts(runtime) == before


def test_a_published_version_never_changes(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    first = _publish(api, keys)
    before = row_counts(runtime)
    for changes in [{"text": NEWSLETTER["text"] + " "}, {"purposes": ["marketing.communications.email"]}]:
        answer = _publish(api, keys, **changes)
        assert answer.status_code == 409, changes
        error = answer.json()["error"]
        assert (error["code"], error["field"]) == ("conflict", "version")
    assert row_counts(runtime) == before
    read = api.get("/v1/notices/newsletter/1", headers=keys.header("reader")).json()
    assert read["text"] == NEWSLETTER["text"] and read["text_sha256"] == first.json()["text_sha256"]


def test_a_new_version_may_change_the_text(api: TestClient, keys: Keys) -> None:
    _publish(api, keys)
    second = _publish(api, keys, version=2, text="Now monthly.")
    assert second.status_code == 201
    assert second.json()["text_sha256"] == hashlib.sha256(b"Now monthly.").hexdigest()
    listed = api.get("/v1/notices", headers=keys.header("collector")).json()
    assert [(n["key"], n["version"]) for n in listed] == [("newsletter", 1), ("newsletter", 2), ("signup", 1)]


def test_a_notice_for_an_unknown_purpose_is_refused(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)
    answer = _publish(api, keys, purposes=["marketing.communications.email", "marketing.nope"])
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("unknown_purpose", "purposes.1")
    assert "marketing.nope" in error["message"]
    assert row_counts(runtime) == before


def test_a_malformed_notice_is_refused(api: TestClient, keys: Keys) -> None:
    for changes, field in [
        ({"version": 0}, "version"),
        ({"version": 2**31}, "version"),  # beyond the column (PostgreSQL's INTEGER)
        ({"version": 2**63}, "version"),  # beyond SQLite's: was a 500
        ({"text": ""}, "text"),
        ({"purposes": []}, "purposes"),
        ({"key": "a b"}, "key"),
    ]:
        answer = _publish(api, keys, **changes)
        assert answer.status_code == 422, changes
        assert answer.json()["error"]["field"] == field


def test_a_notice_version_reads_back_with_its_text(api: TestClient, keys: Keys) -> None:
    published = _publish(api, keys).json()
    answer = api.get("/v1/notices/newsletter/1", headers=keys.header("privacy"))
    assert answer.status_code == 200
    assert answer.json() == {**published, "text": NEWSLETTER["text"]}
    missing = api.get("/v1/notices/newsletter/2", headers=keys.header("privacy"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for version in (2**31, 2**63):
        beyond = api.get(f"/v1/notices/newsletter/{version}", headers=keys.header("privacy"))
        assert beyond.status_code == 422 and beyond.json()["error"]["field"] == "version", beyond.text
