"""FastAPI dependencies shared by the routers.

``WriteSession`` is one transaction per request, committed after the route returns but *before*
the response is sent (``scope="function"``): a 2xx is only ever sent for committed data, and a
failed commit becomes a 5xx. Services flush; only this dependency commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from profilestore.audit.service import AccessRecorder
from profilestore.config import Settings
from profilestore.crypto.service import Vault
from profilestore.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _write_session(request: Request) -> Iterator[Session]:
    with get_runtime(request).db.transaction() as session:
        yield session


def _read_session(request: Request) -> Iterator[Session]:
    session = get_runtime(request).db.read_session()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def _settings(request: Request) -> Settings:
    return get_runtime(request).settings


def _vault(request: Request) -> Vault:
    return get_runtime(request).vault


WriteSession = Annotated[Session, Depends(_write_session, scope="function")]
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(_settings)]
VaultDep = Annotated[Vault, Depends(_vault)]


def _recorder(request: Request) -> AccessRecorder:
    return get_runtime(request).recorder


RecorderDep = Annotated[AccessRecorder, Depends(_recorder)]
