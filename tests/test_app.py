"""The service answers as an HTTP service should: health, request ids, the error shape."""

from __future__ import annotations

from fastapi.testclient import TestClient

from profilestore.app import create_app
from profilestore.runtime import Runtime
from tests.conftest import Keys


def test_healthz_and_readyz_answer_without_credentials(runtime: Runtime) -> None:
    with TestClient(create_app(runtime=runtime)) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "keystore": "ok"}


def test_every_response_carries_a_request_id(runtime: Runtime) -> None:
    with TestClient(create_app(runtime=runtime)) as client:
        generated = client.get("/healthz")
        echoed = client.get("/healthz", headers={"X-Request-Id": "abc12345-trace"})
        missing = client.get("/v1/nowhere")
    assert len(generated.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "abc12345-trace"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.headers["x-request-id"]


def test_readyz_reports_an_unreachable_database(runtime: Runtime) -> None:
    runtime.db.dispose()
    runtime.db.read_engine = runtime.db.engine = __import__("sqlalchemy").create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    with TestClient(create_app(runtime=runtime)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "unavailable"


def test_metrics_are_for_admins_and_label_routes_by_template(runtime: Runtime) -> None:
    from profilestore.auth import service as clients
    from profilestore.auth.schemas import ClientIn, Role

    with runtime.db.transaction() as session:
        admin = clients.create_client(session, ClientIn(name="ops", role=Role.admin)).key
        collector = clients.create_client(session, ClientIn(name="form", role=Role.collector)).key
    with TestClient(create_app(runtime=runtime)) as client:
        client.get("/v1/subjects/sub_secret_id/consents", headers={"Authorization": f"Bearer {admin}"})
        anonymous = client.get("/metrics")
        wrong_role = client.get("/metrics", headers={"Authorization": f"Bearer {collector}"})
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert anonymous.status_code == 401
    assert wrong_role.status_code == 403
    assert scraped.status_code == 200
    assert 'route="/v1/subjects/{subject_id}/consents"' in scraped.text
    assert "sub_secret_id" not in scraped.text


def test_text_holding_a_nul_character_is_never_a_server_error(api: TestClient, keys: Keys, backend: str) -> None:
    """PostgreSQL's text cannot hold U+0000 (its driver refuses the value): that is the client's
    input, answered 422 with nothing written. SQLite stores such text; a lookup by it finds nobody."""
    notice = {"key": "nul", "version": 1, "text": "We \u0000 personalise.", "purposes": ["personalize"]}
    published = api.post("/v1/notices", headers=keys.header("admin"), json=notice)
    lookups = [
        api.put("/v1/purposes/personalize.a%00b", headers=keys.header("admin"), json={"name": "x"}),
        api.get("/v1/subjects/sub_%00/view", headers=keys.header("reader"), params={"purpose": "personalize.content"}),
        api.get("/v1/audit", headers=keys.header("privacy"), params={"subject_id": "sub_\u0000"}),
    ]
    for answer in [published, *lookups]:
        assert answer.status_code < 500, answer.text
    if backend == "postgresql":
        assert published.status_code == 422, published.text
        assert "NUL" in published.json()["error"]["message"]
        assert api.get("/v1/notices/nul/1", headers=keys.header("admin")).status_code == 404, "nothing was written"
    else:
        assert published.status_code == 201, published.text
