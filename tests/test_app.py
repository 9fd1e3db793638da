"""The service answers as an HTTP service should: health, request ids, the error shape."""

from __future__ import annotations

from fastapi.testclient import TestClient

from profilestore.app import create_app
from profilestore.runtime import Runtime


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
