"""Intake routes (zone A): NGO staff of one org only."""

from typing import Annotated

from fastapi import APIRouter, Query

from twoline_intake import service
from twoline_intake.models import ClientCreate, ClientPublic, ClientsPublic
from twoline_shared.auth import NgoCaseworker, NgoStaff
from twoline_shared.db import SessionDep

router = APIRouter(prefix="/clients", tags=["clients"])


@router.post("", status_code=201, response_model=ClientPublic)
def register_client(body: ClientCreate, session: SessionDep, principal: NgoCaseworker):
    """Register a client under a new pseudonym (`client_ref`)."""
    return service.register_client(session, principal=principal, data=body)


@router.get("", response_model=ClientsPublic)
def list_clients(
    session: SessionDep,
    principal: NgoStaff,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
):
    """List your organisation's clients, newest first."""
    rows, count = service.list_clients(session, principal=principal, offset=offset, limit=limit)
    return ClientsPublic(data=[ClientPublic.model_validate(r) for r in rows], count=count)


@router.get("/{client_ref}", response_model=ClientPublic)
def read_client(client_ref: str, session: SessionDep, principal: NgoCaseworker):
    """Read one client record of your organisation."""
    return service.read_client(session, principal=principal, client_ref=client_ref)
