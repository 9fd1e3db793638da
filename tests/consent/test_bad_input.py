"""Bad consent posts: each is a 4xx whose `error.field` names the culprit and whose message names the
problem (never the submitted email or phone), and each writes nothing to either database.

Refused requests write nothing, so the cases of one theme share one store; every case is checked and
all failures are reported together, case by case.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from profilestore.crypto.models import KeystoreBase
from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body, row_counts

EMAIL = "ada.lovelace@analytical.example"
PHONE = "+44 20 7946 0958"
SECRETS = (EMAIL, "ada.lovelace", PHONE, "+442079460958", "7946 0958", "79460958")


def body(**overrides: Any) -> dict[str, Any]:
    """A valid post carrying both an email and a phone (to check that neither is ever echoed)."""
    overrides.setdefault("identifiers", {"email": EMAIL, "phone": PHONE})
    overrides.setdefault("collected_at", (datetime.now(UTC) - timedelta(hours=1)).isoformat())
    return consent_body(**overrides)


def with_item(**item: Any) -> dict[str, Any]:
    result = body()
    result["consents"] = [{"purpose": "personalize", "status": "granted", **item}]
    return result


def without(key: str) -> dict[str, Any]:
    result = body()
    del result[key]
    return result


@dataclass
class Case:
    name: str
    request: dict[str, Any]  # keyword arguments of TestClient.post
    field: str | None
    words: tuple[str, ...]  # the message names the problem with these words
    status: int = 422
    headers: dict[str, str] = field(default_factory=dict)


def case(name: str, payload: Any, field_: str | None, *words: str) -> Case:
    return Case(name, {"json": payload}, field_, words)


def snapshot(runtime: Runtime) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per table of the data database and of the key store."""
    with runtime.keystore.engine.connect() as conn:
        keystore = {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in sorted(KeystoreBase.metadata.tables.items())
        }
    return row_counts(runtime), keystore


def problems(api: TestClient, keys: Keys, runtime: Runtime, cases: list[Case]) -> list[str]:
    """Post every case; describe each way one misbehaves."""
    found = []
    for c in cases:
        before = snapshot(runtime)
        answer = api.post("/v1/consents", **{"headers": {**keys.header("collector"), **c.headers}, **c.request})
        found += [f"{c.name}: {p}" for p in judge(answer, c.status, c.field, c.words)]
        if snapshot(runtime) != before:
            found.append(f"{c.name}: wrote something")
    return found


def judge(answer: httpx.Response, status: int, field_: str | None, words: tuple[str, ...]) -> Iterator[str]:
    if answer.status_code != status:
        yield f"status {answer.status_code}, expected {status}: {answer.text[:200]}"
        return
    if "x-request-id" not in answer.headers:
        yield "no X-Request-Id"
    error = answer.json().get("error", {})
    if set(error) != {"code", "message", "field"}:
        yield f"error shape {error}"
        return
    if error["field"] != field_:
        yield f"field {error['field']!r}, expected {field_!r} ({error['message']!r})"
    message = str(error["message"]).lower()
    missing = [w for w in words if w.lower() not in message]
    if missing:
        yield f"message {error['message']!r} does not say {missing}"
    leaked = [s for s in SECRETS if s.lower() in answer.text.lower()]
    if leaked:
        yield f"the answer repeats personal data {leaked}: {answer.text[:200]}"


# -- identifiers -----------------------------------------------------------------------------------


def test_bad_identifiers_are_refused_naming_the_identifier_never_its_value(
    api: TestClient, keys: Keys, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cases = [
        case(
            "malformed email",
            body(identifiers={"email": "ada.lovelace(at)analytical.example"}),
            "identifiers.email",
            "email",
        ),
        case(
            "email without domain dot",
            body(identifiers={"email": "ada.lovelace@analytical"}),
            "identifiers.email",
            "email",
        ),
        case(
            "email with spaces",
            body(identifiers={"email": "ada lovelace@analytical.example"}),
            "identifiers.email",
            "email",
        ),
        case(
            "email too long",
            body(identifiers={"email": "ada.lovelace" * 30 + "@x.example"}),
            "identifiers.email",
            "at most",
        ),
        case(
            "malformed phone", body(identifiers={"phone": "+44 20 7946 0958 0958 0958"}), "identifiers.phone", "phone"
        ),
        case("phone that is no number", body(identifiers={"phone": "ada.lovelace"}), "identifiers.phone", "phone"),
        case(
            "valid email, bad phone",
            body(identifiers={"email": EMAIL, "phone": "+44 12"}),
            "identifiers.phone",
            "phone",
        ),
        case("empty identifiers", body(identifiers={}), "identifiers", "identifier"),
        case("only null identifiers", body(identifiers={"email": None}), "identifiers", "identifier"),
        case("empty string email", body(identifiers={"email": ""}), "identifiers.email", "empty"),
        case(
            "blank anonymous id",
            body(identifiers={"email": EMAIL, "anonymous_id": "   "}),
            "identifiers.anonymous_id",
            "empty",
        ),
        case("unknown identifier kind", body(identifiers={"email": EMAIL, "fax": PHONE}), "identifiers.fax", "unknown"),
        case(
            "identifier not a string",
            body(identifiers={"email": ["ada.lovelace@analytical.example"]}),
            "identifiers.email",
            "string",
        ),
        case("no identifiers", without("identifiers"), "identifiers", "required"),
        case("an email sent as an identifier kind", body(identifiers={EMAIL: "x"}), "identifiers", "unknown field"),
    ]
    assert problems(api, keys, runtime, cases) == []
    assert not [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in SECRETS)]


# -- purposes, notices, statuses -------------------------------------------------------------------


def test_bad_purposes_notices_and_statuses_are_refused_naming_the_field(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    two = body(purposes={"personalize": "granted", "personalize.nope": "granted"})
    twice = body()
    twice["consents"] = [{"purpose": "analytics", "status": "granted"}, {"purpose": "analytics", "status": "denied"}]
    cases = [
        case("unknown purpose", two, "consents.1.purpose", "unknown purpose", "personalize.nope"),
        case("notice version that does not exist", body(notice={"key": "signup", "version": 2}), "notice", "not exist"),
        case("notice that does not exist", body(notice={"key": "newsletter", "version": 1}), "notice", "not exist"),
        case(
            "purpose the notice does not cover",
            body(purposes={"train_ai_system": "granted"}),
            "consents.0.purpose",
            "not cover",
            "train_ai_system",
        ),
        case(
            "second purpose outside the notice",
            body(purposes={"personalize": "granted", "essential": "granted"}),
            "consents.1.purpose",
            "not cover",
        ),
        case("duplicate purpose", twice, "consents.1.purpose", "twice"),
        case("invalid status", body(purposes={"personalize": "maybe"}), "consents.0.status", "granted", "withdrawn"),
        case("status in capitals", body(purposes={"personalize": "GRANTED"}), "consents.0.status", "granted"),
        case("no decisions", body(consents=[]), "consents", "at least 1"),
        case("notice version zero", body(notice={"key": "signup", "version": 0}), "notice.version", "greater than"),
        case("notice version past 32 bits", body(notice={"key": "signup", "version": 2**31}), "notice.version", "less"),
        case("notice version past 64 bits", body(notice={"key": "signup", "version": 2**63}), "notice.version", "less"),
        case("no notice", without("notice"), "notice", "required"),
        case("empty source", body(source=""), "source", "at least 1"),
    ]
    assert problems(api, keys, runtime, cases) == []


# -- shape -----------------------------------------------------------------------------------------


def test_unknown_fields_anywhere_are_refused_by_name(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    cases = [
        case("unknown top-level field", body(colour="blue"), "colour", "unknown field"),
        case("unknown field in a consent item", with_item(colour="blue"), "consents.0.colour", "unknown field"),
        case(
            "unknown field in the notice",
            body(notice={"key": "signup", "version": 1, "lang": "en"}),
            "notice.lang",
            "unknown field",
        ),
        case(
            "unknown field in the evidence",
            body(evidence={"ip": "203.0.113.1", "email": EMAIL}),
            "evidence.email",
            "unknown field",
        ),
        case("body is a list", [body()], "body", "object"),
    ]
    assert problems(api, keys, runtime, cases) == []


def test_a_malformed_evidence_ip_is_refused_naming_evidence_ip(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    cases = [
        case("malformed IPv4", body(evidence={"ip": "203.0.113.999"}), "evidence.ip", "ip"),
        case("malformed IPv6", body(evidence={"ip": "2001:db8::85a3::1"}), "evidence.ip", "ip"),
    ]
    assert problems(api, keys, runtime, cases) == []


def test_a_body_that_is_not_json_is_refused_naming_the_body(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    headers = {"Content-Type": "application/json"}
    cases = [
        Case(
            "truncated JSON",
            {"content": b'{"identifiers": {"email": "' + EMAIL.encode()},
            "body",
            ("json",),
            headers=headers,
        ),
        Case("not JSON at all", {"content": b"email=" + EMAIL.encode()}, "body", ("json",), headers=headers),
    ]
    assert problems(api, keys, runtime, cases) == []


# -- time ------------------------------------------------------------------------------------------


def test_collected_at_needs_a_time_zone_and_may_not_be_beyond_the_clock_skew(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    skew = runtime.settings.clock_skew_seconds
    assert skew == 300
    beyond = datetime.now(UTC) + timedelta(seconds=skew + 60)
    cases = [
        case("timestamp without a time zone", body(collected_at="2026-01-15T10:00:00"), "collected_at", "time zone"),
        case("beyond the clock skew", body(collected_at=beyond.isoformat()), "collected_at", "future"),
        case("far future", body(collected_at="2999-01-01T00:00:00Z"), "collected_at", "future"),
        case("not a timestamp", body(collected_at="yesterday"), "collected_at", "datetime"),
        case("no collected_at", without("collected_at"), "collected_at", "required"),
    ]
    assert problems(api, keys, runtime, cases) == []

    # A few seconds ahead is a clock that runs a little fast, not a lie.
    ahead = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    accepted = api.post("/v1/consents", headers=keys.header("collector"), json=body(collected_at=ahead))
    assert accepted.status_code == 201, accepted.text


# -- size ------------------------------------------------------------------------------------------


def oversized(runtime: Runtime) -> bytes:
    padding = "x" * runtime.settings.max_body_bytes
    return f'{{"identifiers": {{"email": "{EMAIL}"}}, "source": "{padding}"}}'.encode()


def test_a_body_declared_larger_than_the_limit_is_refused_with_413(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    assert runtime.settings.max_body_bytes == 1_048_576
    headers = {"Content-Type": "application/json"}
    cases = [Case("over 1 MiB", {"content": oversized(runtime)}, "body", ("larger",), status=413, headers=headers)]
    assert problems(api, keys, runtime, cases) == []


def test_a_streamed_body_larger_than_the_limit_is_refused_with_413(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Without a Content-Length (chunked), the limit must hold all the same."""
    data = oversized(runtime)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    headers = {"Content-Type": "application/json"}
    cases = [Case("streamed over 1 MiB", {"content": chunks()}, "body", ("larger",), status=413, headers=headers)]
    assert problems(api, keys, runtime, cases) == []


# -- credentials -----------------------------------------------------------------------------------


def test_posting_consent_needs_a_valid_collector_key(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = snapshot(runtime)
    nobody = api.post("/v1/consents", json=body())
    assert nobody.status_code == 401
    assert nobody.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert nobody.json()["error"]["code"] == "unauthenticated"
    wrong = api.post("/v1/consents", headers={"Authorization": "Bearer psk_not-a-key"}, json=body())
    assert wrong.status_code == 401
    for role in ("reader", "privacy", "admin"):
        answer = api.post("/v1/consents", headers=keys.header(role), json=body())
        assert answer.status_code == 403, role
        assert answer.json()["error"]["code"] == "forbidden"
    for answer in (nobody, wrong):
        assert not [s for s in SECRETS if s in answer.text]
    assert snapshot(runtime) == before
