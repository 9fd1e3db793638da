"""The ASGI application: routers of every domain, the error shape, request ids."""

from __future__ import annotations

from fastapi import FastAPI

from profilestore import __version__, health
from profilestore.config import Settings
from profilestore.kit.http import RequestContextMiddleware, install_error_handlers
from profilestore.runtime import Runtime


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Databases are expected to be migrated (``profilestore serve`` does it)."""
    runtime = runtime or Runtime.from_settings(settings or Settings())
    app = FastAPI(
        title="profilestore",
        version=__version__,
        description="First-party consent ledger and purpose-bound profile store.",
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(health.router)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=runtime.settings.max_body_bytes)
    return app
