"""Liveness and readiness (unauthenticated: they reveal nothing but up or down) and Prometheus
metrics (admin: scrape with a bearer key)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from profilestore import metrics
from profilestore.auth.dependencies import Admin
from profilestore.deps import get_runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "unavailable"]]


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The database or the key store does not answer"}},
)
def readyz(request: Request) -> JSONResponse:
    runtime = get_runtime(request)
    checks: dict[str, Literal["ok", "unavailable"]] = {}
    for name, database in (("database", runtime.db), ("keystore", runtime.keystore)):
        try:
            with database.read_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks[name] = "ok"
        except Exception:  # any failure means not ready; the reason goes to the log, not the caller
            checks[name] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    readiness = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(readiness.model_dump(), 200 if ready else 503)


@router.get("/metrics", response_class=Response)
def prometheus_metrics(_: Admin) -> Response:
    """Counters and latency histograms of this process, in the Prometheus text format."""
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
