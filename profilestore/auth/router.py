"""Admin API for clients."""

from __future__ import annotations

from fastapi import APIRouter

from profilestore.auth import service
from profilestore.auth.dependencies import Admin
from profilestore.auth.schemas import ClientCreated, ClientIn, ClientOut
from profilestore.deps import ReadSession, WriteSession
from profilestore.kit.openapi import errors

router = APIRouter(prefix="/v1/clients", tags=["admin"])


@router.post("", status_code=201)
def create_client(body: ClientIn, session: WriteSession, _: Admin) -> ClientCreated:
    """Create a client; the key is in this response only."""
    return service.create_client(session, body)


@router.get("")
def list_clients(session: ReadSession, _: Admin) -> list[ClientOut]:
    return service.list_clients(session)


@router.delete("/{client_id}", responses=errors({404: "No such client"}))
def revoke_client(client_id: str, session: WriteSession, _: Admin) -> ClientOut:
    """Revoke a client's key at once, on every process (keys are checked on every request)."""
    return service.revoke_client(session, client_id)
