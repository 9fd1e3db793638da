"""FastAPI dependencies shared by the routers.

``WriteSession`` is one transaction per request, committed after the route returns but *before*
the response is sent (``scope="function"``): a 2xx is only ever sent for committed data, and a
failed commit becomes a 5xx. Services flush; only this dependency commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from profilestore.audit.service import AccessRecorder
from profilestore.config import Settings
from profilestore.crypto.service import Vault
from profilestore.db import Database
from profilestore.runtime import Runtime

T = TypeVar("T")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def database_work(database: Database, work: Callable[[], T]) -> T:
    """Run a route's blocking database ``work`` where it costs least.

    The embedded SQLite database answers from local pages in microseconds and never waits on a
    network: there the work runs on the event loop, saving a trip to the thread pool and back
    (which cost more than a whole view). Other databases wait a network round trip per statement:
    their work goes to the thread pool, so that one process's waits overlap.
    """
    if database.is_sqlite:
        return work()
    return await run_in_threadpool(work)


def _write_session(request: Request) -> Iterator[Session]:
    with get_runtime(request).db.transaction() as session:
        yield session


async def _read_session(request: Request) -> AsyncIterator[Session]:
    # Made on the event loop (a session does no I/O until first used, in the route's thread) and
    # closed where database work belongs (database_work): a plain ``def`` would cost two trips to
    # the thread pool and back per request.
    database = get_runtime(request).db
    session = database.read_session()
    try:
        yield session
    finally:
        await database_work(database, session.close)


# The dependencies below only read attributes: ``async def`` runs them on the event loop. A plain
# ``def`` would send each one to the thread pool and back, and those hops, not the work, were what
# a view spent most of its time on.


async def _settings(request: Request) -> Settings:
    return get_runtime(request).settings


async def _vault(request: Request) -> Vault:
    return get_runtime(request).vault


WriteSession = Annotated[Session, Depends(_write_session, scope="function")]
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(_settings)]
VaultDep = Annotated[Vault, Depends(_vault)]


async def _recorder(request: Request) -> AccessRecorder:
    return get_runtime(request).recorder


RecorderDep = Annotated[AccessRecorder, Depends(_recorder)]
