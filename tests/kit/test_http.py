"""HTTP plumbing every route shares: one error shape, request ids, the body size limit, and
validation messages that never repeat what was sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
from fastapi.testclient import TestClient

from profilestore.app import create_app
from profilestore.kit.http import BatchSpreadMiddleware
from profilestore.runtime import Runtime
from tests.conftest import Keys, consent_body, row_counts
from tests.events.support import basic_auth, event, grant

EMAIL = "ada.lovelace@example.com"


def _assert_error_shape(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert answer.headers["x-request-id"]
    return dict(body["error"])


def test_every_error_has_the_same_shape(api: TestClient, keys: Keys) -> None:
    _assert_error_shape(api.get("/v1/nowhere", headers=keys.header("admin")), 404, "not_found")

    not_allowed = api.patch("/v1/consents", headers=keys.header("collector"), json={})
    _assert_error_shape(not_allowed, 405, "method_not_allowed")
    assert not_allowed.headers["allow"] == "POST"

    invalid = api.post("/v1/consents", headers=keys.header("collector"), json=consent_body(source=""))
    assert _assert_error_shape(invalid, 422, "invalid")["field"] == "source"

    unauthenticated = api.post("/v1/consents", json=consent_body())
    _assert_error_shape(unauthenticated, 401, "unauthenticated")
    assert unauthenticated.headers["www-authenticate"] == "Bearer"


def _without_notice() -> dict[str, Any]:
    body = consent_body()
    del body["notice"]
    return body


def test_an_invalid_body_is_a_422_naming_the_field_and_the_problem(api: TestClient, keys: Keys) -> None:
    for body, field, message in [
        (_without_notice(), "notice", "field required"),
        (consent_body(colour="red"), "colour", "unknown field"),
        (consent_body(collected_at="2026-01-15T10:00:00"), "collected_at", "time zone"),
        (b'{"identifiers": ', None, "body is not valid JSON"),
    ]:
        if isinstance(body, bytes):
            headers = {**keys.header("collector"), "Content-Type": "application/json"}
            answer = api.post("/v1/consents", headers=headers, content=body)
        else:
            answer = api.post("/v1/consents", headers=keys.header("collector"), json=body)
        error = _assert_error_shape(answer, 422, "invalid")
        assert message in error["message"], error
        if field is not None:
            assert error["field"] == field, error


# -- request ids -----------------------------------------------------------------------------------


def test_a_well_formed_request_id_is_echoed(api: TestClient) -> None:
    for incoming in ["abc12345-trace", "0af7651916cd43dd8448eb211c80319c", "a.b_c-d.e_f-g.h", "x" * 64]:
        for path in ("/healthz", "/v1/nowhere"):
            assert api.get(path, headers={"X-Request-Id": incoming}).headers["x-request-id"] == incoming


def test_a_malformed_request_id_is_replaced(api: TestClient) -> None:
    malformed = ["has spaces in it", "x" * 65, "short", "semi;colon;id", 'quote"d-request-id', "ümlaut-request-id", ""]
    for incoming in malformed:
        answer = api.get("/healthz", headers={"X-Request-Id": incoming.encode()})
        assert answer.headers["x-request-id"] != incoming
        assert len(answer.headers["x-request-id"]) == 32
        assert answer.headers.get_list("x-request-id") == [answer.headers["x-request-id"]], "exactly one request id"


def test_every_request_gets_its_own_id(api: TestClient) -> None:
    ids = {api.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


# -- body size -------------------------------------------------------------------------------------


def test_a_body_declared_too_large_is_a_413_and_writes_nothing(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)
    limit = runtime.settings.max_body_bytes
    big = consent_body(source="s" * (limit + 1))
    answer = api.post("/v1/consents", headers=keys.header("collector"), json=big)
    error = _assert_error_shape(answer, 413, "payload_too_large")
    assert error["field"] == "body"
    assert row_counts(runtime) == before


def test_a_streamed_body_over_the_limit_is_a_413_without_content_length(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    before = row_counts(runtime)
    limit = runtime.settings.max_body_bytes
    chunk = b" " * 65_536

    def chunks() -> Iterator[bytes]:
        yield b'{"source": "'
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield b'"}'

    answer = api.post(
        "/v1/consents",
        headers={**keys.header("collector"), "Content-Type": "application/json"},
        content=chunks(),
    )
    assert "content-length" not in answer.request.headers
    assert answer.request.headers["transfer-encoding"] == "chunked"
    _assert_error_shape(answer, 413, "payload_too_large")
    assert row_counts(runtime) == before


def test_a_body_sent_in_many_chunks_over_the_limit_is_a_413(runtime: Runtime, keys: Keys) -> None:
    """The same over the raw ASGI interface, as a server delivers a chunked upload: many
    ``http.request`` messages, no Content-Length."""
    limit = runtime.settings.max_body_bytes
    chunk = b" " * 65_536
    messages = [{"type": "http.request", "body": b'{"source": "', "more_body": True}]
    messages += [{"type": "http.request", "body": chunk, "more_body": True}] * (limit // len(chunk) + 2)
    messages += [{"type": "http.request", "body": b'"}', "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/consents",
        "raw_path": b"/v1/consents",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", f"Bearer {keys.collector}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    anyio.run(create_app(runtime=runtime), scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 413, body
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_body_at_the_limit_is_read(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    limit = runtime.settings.max_body_bytes
    body = b'{"identifiers": {"anonymous_id": "a"}}'
    padded = body + b" " * (limit - len(body))
    answer = api.post(
        "/v1/subjects/resolve", headers={**keys.header("privacy"), "Content-Type": "application/json"}, content=padded
    )
    assert answer.status_code == 404, answer.text  # read and answered: no such subject


# -- no echo ---------------------------------------------------------------------------------------


NO_ECHO_CASES: list[tuple[list[str | int], Any]] = [
    (["collected_at"], EMAIL),
    (["collected_at"], [EMAIL]),
    (["evidence", "ip"], EMAIL),
    (["evidence", "locale"], {"value": EMAIL}),
    (["evidence", "user_agent"], [EMAIL]),
    (["notice", "version"], EMAIL),
    (["notice"], EMAIL),
    (["consents", 0, "status"], EMAIL),
    (["consents", 0, "purpose"], [EMAIL]),
    (["consents"], {"value": EMAIL}),
    (["identifiers", "email"], [EMAIL]),
    (["identifiers", "phone"], {"value": EMAIL}),
    (["identifiers"], EMAIL),
    (["source"], EMAIL * 10),
]


def test_a_validation_error_never_echoes_the_submitted_value(api: TestClient, keys: Keys) -> None:
    for path, wrong in NO_ECHO_CASES:
        body = consent_body(email="someone.else@example.org")
        target: Any = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = wrong
        answer = api.post("/v1/consents", headers=keys.header("collector"), json=body)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["error"]["field"].startswith(".".join(str(p) for p in path)), (path, answer.text)
        assert "ada.lovelace" not in answer.text, path
        assert "someone.else" not in answer.text, path


def test_a_client_creation_error_never_echoes_the_submitted_value(api: TestClient, keys: Keys) -> None:
    answer = api.post("/v1/clients", headers=keys.header("admin"), json={"name": "x", "role": EMAIL})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "role"
    assert EMAIL not in answer.text


# -- spreading event batches over serving processes ---------------------------------------------------


def _hold_requests(path: str, count: int, per_process: int) -> tuple[list[bool], int]:
    """``count`` requests to ``path`` sent at once through ``BatchSpreadMiddleware``, each answered
    once the app has it and the one before it is answered. Returns whether each answer asked the
    sender to reconnect (in answer order), and the most the app held at once."""
    release = [anyio.Event() for _ in range(count)]
    entered = 0
    inside = most_inside = 0
    closes: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered, inside, most_inside
        mine = entered
        entered += 1
        inside += 1
        most_inside = max(most_inside, inside)
        await release[mine].wait()
        inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    spread = BatchSpreadMiddleware(app, frozenset({"/v1/events", "/v1/batch"}), per_process)

    async def one() -> None:
        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                closes.append((b"connection", b"close") in message["headers"])

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await spread({"type": "http", "path": path, "headers": []}, receive, send)

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(count):
                tasks.start_soon(one)
            for answered, event in enumerate(release):
                while entered <= answered:
                    await anyio.sleep(0)
                await anyio.sleep(0.01)  # let every request that can get in do so
                event.set()
                while len(closes) <= answered:
                    await anyio.sleep(0)

    anyio.run(main)
    return closes, most_inside


def test_a_process_over_its_share_of_batches_works_on_two_and_asks_the_others_to_reconnect() -> None:
    # Four at once with room for two: two are worked on, two wait. The first two answers (4, then 3
    # held) close their connection; the last two (2, then 1) keep theirs.
    assert _hold_requests("/v1/events", 4, per_process=2) == ([True, True, False, False], 2)
    assert _hold_requests("/v1/batch", 3, per_process=2) == ([True, False, False], 2)


def test_batches_within_the_share_and_other_routes_are_left_alone() -> None:
    assert _hold_requests("/v1/events", 2, per_process=2) == ([False, False], 2)
    assert _hold_requests("/v1/subjects/x/view", 5, per_process=2) == ([False] * 5, 5)


def test_a_batch_answered_alone_keeps_its_connection(api: TestClient, keys: Keys) -> None:
    grant(api, keys, {"email": "ada@example.com"})
    answer = api.post(
        "/v1/events",
        headers={"Authorization": f"Bearer {keys.collector}"},
        json={"events": [event({"email": "ada@example.com"}, "m-1")]},
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert "close" not in answer.headers.get("connection", "")


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def test_a_body_the_json_parser_gives_up_on_is_a_422_on_body_and_writes_nothing(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Bytes that are not UTF-8 were FastAPI's own 400 (saying nothing of which part was wrong);
    nesting deeper than Python's parser goes was a 500 on the Segment routes."""
    before = row_counts(runtime)
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    cases = [
        ("/v1/consents", keys.header("collector"), b'\xff{"a": 1}', "not valid JSON (UTF-8)"),
        ("/v1/batch", keys.header("collector"), b'\xff{"a": 1}', "not valid JSON (UTF-8)"),
        ("/v1/events", keys.header("collector"), deep, "nested too deeply"),
        ("/v1/consents", keys.header("collector"), deep, "nested too deeply"),
        ("/v1/batch", keys.header("collector"), deep, "nested too deeply"),
    ]
    for path, headers, body, words in cases:
        answer = api.post(path, headers={**headers, "Content-Type": "application/json"}, content=body)
        error = _assert_error_shape(answer, 422, "invalid")
        assert (error["field"], words in error["message"]) == ("body", True), (path, answer.text)
    assert row_counts(runtime) == before


def test_event_properties_nest_at_most_32_levels_and_those_that_do_are_read_back(
    api: TestClient, keys: Keys, runtime: Runtime
) -> None:
    """Properties nested 900 deep were stored, and from then on every view showing recent events
    of that person answered 500 (pydantic serialises about 255 levels)."""
    subject_id = grant(api, keys, {"anonymous_id": "deep-1"})
    headers = {**keys.header("collector"), "Content-Type": "application/json"}

    def batch(message_id: str, depth: int) -> str:
        # Written out by hand: the properties object is level 1, ``_nested(n)`` nests n objects.
        body = json.dumps({"events": [event({"anonymous_id": "deep-1"}, message_id, properties={"x": 1})]})
        return body.replace('{"x": 1}', _nested(depth))

    before = row_counts(runtime)
    for depth in (33, 900):
        refused = api.post("/v1/events", headers=headers, content=batch(f"deep-{depth}", depth))
        error = _assert_error_shape(refused, 422, "invalid")
        assert (error["field"], "32 levels" in error["message"]) == ("events.0.properties", True), refused.text
        assert row_counts(runtime) == before
    segment = {**basic_auth(keys.collector), "Content-Type": "application/json"}
    track = '{"anonymousId": "deep-1", "event": "Viewed", "properties": ' + _nested(33) + "}"
    error = _assert_error_shape(api.post("/v1/track", headers=segment, content=track), 422, "invalid")
    assert error["field"] == "batch.0.properties"

    answer = api.post("/v1/events", headers=headers, content=batch("deep-32", 32))
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    read = api.get(
        f"/v1/subjects/{subject_id}/view",
        headers=keys.header("reader"),
        params={"purpose": "personalize.content.profiling", "include": "recent_events"},
    )
    assert read.status_code == 200, read.text
    properties = read.json()["recent_events"][0]["properties"]
    depth = 0
    while isinstance(properties, dict):
        properties, depth = properties["a"], depth + 1
    assert (depth, properties) == (32, 1)
