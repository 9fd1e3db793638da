"""The floor under a view, as an app of its own: FastAPI, one sync endpoint, one primary-key lookup
of the subject row through the product's engine setup (``profilestore.db.Database``: its read
engine and sessionmaker). No auth, no consent, no signals, no access log.

``views_bench.py`` serves it the way ``profilestore serve`` serves the service — a uvicorn
process tree with the same number of workers, httptools and uvloop::

    BENCH_BASELINE_DATABASE_URL=sqlite:///…/profilestore.db \\
        python -m uvicorn bench.baseline_app:create_app --factory --workers 2
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from sqlalchemy import select

from profilestore.db import Database
from profilestore.identity.models import Subject

DATABASE_URL_ENV = "BENCH_BASELINE_DATABASE_URL"


def create_app() -> FastAPI:
    """The app for the data database named by ``$BENCH_BASELINE_DATABASE_URL`` (one per worker
    process, as uvicorn's ``--factory`` builds it)."""
    db = Database(os.environ[DATABASE_URL_ENV])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            db.dispose()

    app = FastAPI(title="bare primary-key lookup", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/subjects/{subject_id}")
    def lookup(subject_id: str) -> dict[str, str]:
        with db.read_session() as session:
            row = session.execute(select(Subject.id, Subject.status).where(Subject.id == subject_id)).first()
        if row is None:
            raise HTTPException(status_code=404, detail="not found")
        return {"id": row.id, "status": row.status}

    return app
