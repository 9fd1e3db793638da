"""The ASGI application: routers of every domain, the error shape, request ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from profilestore import __version__, health
from profilestore.audit.router import router as audit_router
from profilestore.auth.dependencies import judge_before_refusing
from profilestore.auth.router import router as clients_router
from profilestore.config import Settings
from profilestore.consent.router import router as consent_router
from profilestore.events.router import router as events_router
from profilestore.events.segment_router import SINGLE_CALLS
from profilestore.events.segment_router import router as segment_router
from profilestore.identity.router import router as subjects_router
from profilestore.kit import memory
from profilestore.kit.http import BatchSpreadMiddleware, RequestContextMiddleware, install_error_handlers
from profilestore.kit.openapi import complete_openapi
from profilestore.preferences.router import router as preferences_router
from profilestore.purposes.router import router as purposes_router
from profilestore.runtime import Runtime
from profilestore.views.router import router as views_router

# The routes that take many events at once: their own body limits, and spread over the processes.
EVENT_BATCHES, SEGMENT_BATCHES = "/v1/events", "/v1/batch"


def create_app(settings: Settings | None = None, runtime: Runtime | None = None, *, tune_gc: bool = False) -> FastAPI:
    """Build the app. Databases are expected to be migrated (``profilestore serve`` does it).
    ``tune_gc`` sets the process's garbage collector up for serving (see ``kit/memory.py``): for
    the server process, not for a test suite that builds many apps."""
    runtime = runtime or Runtime.from_settings(settings or Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.recorder.start()
        runtime.db.start_checkpointing()
        if tune_gc:
            memory.settle()
        try:
            yield
        finally:
            # A clean shutdown writes every buffered access-log entry before the process ends.
            runtime.recorder.close()
            runtime.db.stop_checkpointing()

    app = FastAPI(
        lifespan=lifespan,
        title="profilestore",
        version=__version__,
        description="First-party consent ledger and purpose-bound profile store.",
    )
    app.state.runtime = runtime
    install_error_handlers(app, check_caller=judge_before_refusing)
    complete_openapi(app)
    # The hot routes first: a request is matched against the routes in this order.
    for router in (
        views_router,
        events_router,
        segment_router,
        health.router,
        consent_router,
        preferences_router,
        subjects_router,
        purposes_router,
        audit_router,
        clients_router,
    ):
        app.include_router(router)
    settings = runtime.settings
    app.add_middleware(
        BatchSpreadMiddleware,
        paths=frozenset({EVENT_BATCHES, SEGMENT_BATCHES}),
        per_process=settings.events.batches_in_flight_per_process,
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        route_limits={
            EVENT_BATCHES: settings.events.max_batch_bytes,
            SEGMENT_BATCHES: settings.events.segment_max_batch_bytes,
            **{f"/v1/{kind}": settings.events.max_event_bytes for kind in SINGLE_CALLS},
        },
    )
    return app


def create_served_app() -> FastAPI:
    """The app as each process of ``profilestore serve --workers N`` builds it (settings from the
    environment)."""
    return create_app(tune_gc=True)
