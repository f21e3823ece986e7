"""Intake routes (zone A): NGO staff of one org only."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response

from twoline_intake import service
from twoline_intake.models import (
    Client,
    ClientCreate,
    ClientPublic,
    ClientsPublic,
    ClientUpdate,
    ContactCreate,
    ContactPublic,
    ContactsPublic,
)
from twoline_shared.auth import NgoCaseworker
from twoline_shared.db import SessionDep
from twoline_shared.idempotency import IdempotencyDep, respond_once
from twoline_shared.openapi import problems
from twoline_shared.pagination import PageDep

router = APIRouter(prefix="/clients", tags=["clients"])

ContactId = Annotated[
    uuid.UUID,
    Path(
        description="The outreach contact's id, as its `Location` names it.",
        examples=["3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"],
    ),
]

ClientRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="The client's pseudonym, as intake gave it out at registration.",
        examples=["C-5A7B63FF22E4"],
    ),
]


@router.post("", status_code=201, response_model=ClientPublic)
def register_client(
    body: ClientCreate,
    response: Response,
    session: SessionDep,
    principal: NgoCaseworker,
    idempotency: IdempotencyDep,
):
    """Register a client under a new pseudonym (`client_ref`)."""

    def create() -> tuple[Client, str]:
        client = service.register_client(session, principal=principal, data=body)
        return client, client.client_ref

    return respond_once(
        idempotency,
        session,
        response,
        act=create,
        replay=lambda ref: service.read_client(session, principal=principal, client_ref=ref),
        location=lambda ref: f"/v1/clients/{ref}",
    )


@router.get("", response_model=ClientsPublic)
def list_clients(
    session: SessionDep,
    principal: NgoCaseworker,
    page: PageDep,
):
    """List your organisation's clients, newest first."""
    rows, count = service.list_clients(
        session, principal=principal, offset=page.offset, limit=page.limit
    )
    return ClientsPublic(data=[ClientPublic.model_validate(r) for r in rows], count=count)


@router.get("/{client_ref}", response_model=ClientPublic, responses=problems(404))
def read_client(client_ref: ClientRef, session: SessionDep, principal: NgoCaseworker):
    """Read one client record of your organisation."""
    return service.read_client(session, principal=principal, client_ref=client_ref)


@router.patch("/{client_ref}", response_model=ClientPublic, responses=problems(404))
def update_client(
    client_ref: ClientRef, body: ClientUpdate, session: SessionDep, principal: NgoCaseworker
):
    """Change some fields of a client record; fields not sent stay as they are."""
    return service.update_client(session, principal=principal, client_ref=client_ref, data=body)


@router.post(
    "/{client_ref}/contacts", status_code=201, response_model=ContactPublic, responses=problems(404)
)
def log_contact(
    client_ref: ClientRef,
    body: ContactCreate,
    response: Response,
    session: SessionDep,
    principal: NgoCaseworker,
    idempotency: IdempotencyDep,
):
    """Log an outreach contact with a client: `contact`, `inform` or `refer`."""

    def create() -> tuple[ContactPublic, str]:
        contact = service.log_contact(
            session, principal=principal, client_ref=client_ref, data=body
        )
        public = ContactPublic.model_validate(contact, update={"client_ref": client_ref})
        return public, str(contact.id)

    return respond_once(
        idempotency,
        session,
        response,
        act=create,
        replay=lambda contact_id: _contact(session, principal, client_ref, contact_id),
        location=lambda contact_id: f"/v1/clients/{client_ref}/contacts/{contact_id}",
    )


def _contact(
    session: SessionDep, principal: NgoCaseworker, client_ref: str, contact_id: str
) -> ContactPublic:
    contact = service.read_contact(
        session, principal=principal, client_ref=client_ref, contact_id=uuid.UUID(contact_id)
    )
    return ContactPublic.model_validate(contact, update={"client_ref": client_ref})


@router.get(
    "/{client_ref}/contacts/{contact_id}", response_model=ContactPublic, responses=problems(404)
)
def read_contact(
    client_ref: ClientRef, contact_id: ContactId, session: SessionDep, principal: NgoCaseworker
):
    """Read one outreach contact of a client of your organisation."""
    return _contact(session, principal, client_ref, str(contact_id))


@router.get("/{client_ref}/contacts", response_model=ContactsPublic, responses=problems(404))
def list_contacts(
    client_ref: ClientRef,
    session: SessionDep,
    principal: NgoCaseworker,
    page: PageDep,
):
    """A client's outreach contacts, most recent first."""
    client, rows, count = service.list_contacts(
        session, principal=principal, client_ref=client_ref, offset=page.offset, limit=page.limit
    )
    return ContactsPublic(
        data=[
            ContactPublic.model_validate(r, update={"client_ref": client.client_ref}) for r in rows
        ],
        count=count,
    )
