"""Client keys: random, shown once, stored only as their SHA-256; readers are bound to purposes."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from profilestore.auth import service
from profilestore.auth.schemas import ClientIn, Role
from profilestore.kit.errors import NotFound
from profilestore.runtime import Runtime
from tests.conftest import Keys, row_counts


def _create(api: TestClient, keys: Keys, **body: Any) -> Any:
    return api.post("/v1/clients", headers=keys.header("admin"), json=body)


def _stored_clients(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text("SELECT * FROM clients"))]


def test_a_created_key_is_in_the_creating_response_only(api: TestClient, keys: Keys) -> None:
    created = _create(api, keys, name="personalisation engine", role="reader", purposes=["personalize.content"])
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("psk_") and len(key) >= 40
    assert body["purposes"] == ["personalize.content"]
    assert body["key_prefix"] == key[:12]

    listed = api.get("/v1/clients", headers=keys.header("admin"))
    assert listed.status_code == 200
    mine = [c for c in listed.json() if c["client_id"] == body["client_id"]]
    assert len(mine) == 1 and "key" not in mine[0]
    assert key not in listed.text
    assert all("key" not in c for c in listed.json())


def test_a_key_is_stored_only_as_its_sha256(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    key = _create(api, keys, name="tracker", role="collector").json()["key"]
    rows = _stored_clients(runtime)
    mine = [r for r in rows if bytes(r["key_sha256"]) == hashlib.sha256(key.encode()).digest()]
    assert len(mine) == 1
    for row in rows:
        for column, value in row.items():
            as_bytes = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
            assert key.encode() not in as_bytes, f"raw key found in clients.{column}"
            assert key[12:].encode() not in as_bytes, f"the secret part of the key found in clients.{column}"


def test_a_created_key_authenticates_as_its_role(api: TestClient, keys: Keys) -> None:
    key = _create(api, keys, name="tracker", role="collector").json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert api.get("/v1/purposes", headers=headers).status_code == 200
    assert api.get("/v1/clients", headers=headers).status_code == 403


def test_every_key_is_different(api: TestClient, keys: Keys) -> None:
    made = [_create(api, keys, name=f"c{i}", role="collector").json() for i in range(5)]
    assert len({m["key"] for m in made}) == 5
    assert len({m["client_id"] for m in made}) == 5


def test_a_reader_needs_at_least_one_purpose(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)
    answer = _create(api, keys, name="engine", role="reader")
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "purposes"
    assert row_counts(runtime) == before


def test_only_readers_are_bound_to_purposes(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)
    for role in ["collector", "privacy", "admin"]:
        answer = _create(api, keys, name="x", role=role, purposes=["personalize.content"])
        assert answer.status_code == 422, role
        assert answer.json()["error"]["field"] == "purposes"
    assert row_counts(runtime) == before


def test_a_reader_for_an_unknown_purpose_is_refused(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    before = row_counts(runtime)
    answer = _create(api, keys, name="engine", role="reader", purposes=["personalize.content", "personalize.nope"])
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "unknown_purpose"
    assert error["field"] == "purposes.1"
    assert "personalize.nope" in error["message"]
    assert row_counts(runtime) == before


def test_a_malformed_client_is_refused(api: TestClient, keys: Keys) -> None:
    for body, field in [
        ({"name": "x", "role": "superuser"}, "role"),
        ({"name": "", "role": "admin"}, "name"),
        ({"role": "admin"}, "name"),
        ({"name": "x", "role": "admin", "key": "psk_chosen"}, "key"),
    ]:
        answer = _create(api, keys, **body)
        assert answer.status_code == 422, body
        assert answer.json()["error"]["code"] == "invalid"
        assert answer.json()["error"]["field"] == field


def test_authenticate_knows_live_keys_only(runtime: Runtime) -> None:
    with runtime.db.transaction() as session:
        created = service.create_client(session, ClientIn(name="engine", role=Role.reader, purposes=["analytics"]))
    with runtime.db.transaction(write=False) as session:
        caller = service.authenticate(session, created.key)
        assert service.authenticate(session, created.key + "x") is None
        assert service.authenticate(session, created.key.removeprefix("psk_")) is None
        assert service.authenticate(session, "") is None
    assert caller is not None
    assert (caller.client_id, caller.role, caller.purposes) == (created.client_id, Role.reader, {"analytics"})

    with runtime.db.transaction() as session:
        revoked = service.revoke_client(session, created.client_id)
    assert revoked.revoked_at is not None
    with runtime.db.transaction(write=False) as session:
        assert service.authenticate(session, created.key) is None


def test_revoking_twice_keeps_the_first_revocation_time(runtime: Runtime) -> None:
    with runtime.db.transaction() as session:
        created = service.create_client(session, ClientIn(name="tracker", role=Role.collector))
    with runtime.db.transaction() as session:
        first = service.revoke_client(session, created.client_id)
    with runtime.db.transaction() as session:
        second = service.revoke_client(session, created.client_id)
    assert second.revoked_at == first.revoked_at


def test_revoking_an_unknown_client_is_not_found(api: TestClient, keys: Keys, runtime: Runtime) -> None:
    with runtime.db.transaction() as session, pytest.raises(NotFound):
        service.revoke_client(session, "cli_nobody")
    answer = api.delete("/v1/clients/cli_nobody", headers=keys.header("admin"))
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
