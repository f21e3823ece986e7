"""Intake use cases: load, apply the rule, save, queue events and audit records."""

import uuid

from sqlmodel import Session

from twoline_intake import repository
from twoline_intake.domain import categories_of, categories_present, disclosure_package
from twoline_intake.models import (
    Client,
    ClientCreate,
    ClientQuery,
    ClientUpdate,
    Contact,
    ContactCreate,
    DisclosureReply,
    DisclosureRequest,
)
from twoline_shared.audit import record_audit
from twoline_shared.auth import Principal
from twoline_shared.db import utcnow
from twoline_shared.errors import NotFound
from twoline_shared.events import new_event
from twoline_shared.outbox import add_event

SOURCE = "twoline/intake"


def register_client(session: Session, *, principal: Principal, data: ClientCreate) -> Client:
    """Register a client in the caller's org and announce it by reference only."""
    client = Client.model_validate(
        data.model_dump(), update={"org": principal.org, "registered_by": principal.sub}
    )
    repository.add_client(session, client=client)
    add_event(
        session,
        new_event(
            source=SOURCE,
            type="firstline.intake.client.registered",
            subject=client.client_ref,
            client_ref=client.client_ref,
            org=client.org,
        ),
    )
    record_audit(
        session,
        service="intake",
        action="create",
        actor=principal,
        resource_type="client",
        resource_id=client.client_ref,
        categories=categories_present(data.model_dump()),
    )
    return client


def _own_client(session: Session, *, principal: Principal, client_ref: str) -> Client:
    """A client of the caller's org; another org's client is indistinguishable from none (F7)."""
    client = repository.get_client(session, org=principal.org or "", client_ref=client_ref)
    if client is None:
        raise NotFound(f"No client {client_ref!r} in your organisation.")
    return client


def read_client(session: Session, *, principal: Principal, client_ref: str) -> Client:
    client = _own_client(session, principal=principal, client_ref=client_ref)
    record_audit(
        session,
        service="intake",
        action="read",
        actor=principal,
        resource_type="client",
        resource_id=client.client_ref,
    )
    return client


def update_client(
    session: Session, *, principal: Principal, client_ref: str, data: ClientUpdate
) -> Client:
    """Change only the fields sent; announce which categories changed, never the values."""
    client = _own_client(session, principal=principal, client_ref=client_ref)
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return client
    for name, value in changes.items():
        setattr(client, name, value)
    client.updated_at = utcnow()
    session.add(client)
    categories = categories_of(changes)
    add_event(
        session,
        new_event(
            source=SOURCE,
            type="firstline.intake.client.updated",
            subject=client.client_ref,
            client_ref=client.client_ref,
            org=client.org,
            categories=categories,
        ),
    )
    record_audit(
        session,
        service="intake",
        action="update",
        actor=principal,
        resource_type="client",
        resource_id=client.client_ref,
        categories=categories,
    )
    return client


def log_contact(
    session: Session, *, principal: Principal, client_ref: str, data: ContactCreate
) -> Contact:
    """Record one outreach activity (contact, inform, refer) with a client of the caller's org."""
    client = _own_client(session, principal=principal, client_ref=client_ref)
    contact = repository.add_contact(
        session,
        contact=Contact.model_validate(
            data.model_dump(), update={"client_id": client.id, "logged_by": principal.sub}
        ),
    )
    add_event(
        session,
        new_event(
            source=SOURCE,
            type="firstline.intake.contact.logged",
            subject=client.client_ref,
            client_ref=client.client_ref,
            org=client.org,
            contact_id=str(contact.id),
            kind=contact.kind,
        ),
    )
    record_audit(
        session,
        service="intake",
        action="create",
        actor=principal,
        resource_type="contact",
        resource_id=str(contact.id),
        client_ref=client.client_ref,
        kind=contact.kind,
    )
    return contact


def read_contact(
    session: Session, *, principal: Principal, client_ref: str, contact_id: uuid.UUID
) -> Contact:
    """One outreach contact of a client of the caller's org; else 404 (F7)."""
    client = _own_client(session, principal=principal, client_ref=client_ref)
    contact = repository.get_contact(session, client=client, contact_id=contact_id)
    if contact is None:
        raise NotFound(f"No contact {contact_id} of client {client_ref!r} in your organisation.")
    return contact


def list_contacts(
    session: Session, *, principal: Principal, client_ref: str, offset: int, limit: int
) -> tuple[Client, list[Contact], int]:
    client = _own_client(session, principal=principal, client_ref=client_ref)
    rows, count = repository.list_contacts(session, client=client, offset=offset, limit=limit)
    return client, rows, count


def list_clients(
    session: Session, *, principal: Principal, offset: int, limit: int
) -> tuple[list[Client], int]:
    rows, count = repository.list_clients(
        session, org=principal.org or "", offset=offset, limit=limit
    )
    # A list shows whole records: it is a read of personal data like any other (ids only here).
    record_audit(
        session,
        service="intake",
        action="search",
        actor=principal,
        resource_type="client",
        resource_id=principal.org or "",
        client_refs=[c.client_ref for c in rows],
    )
    return rows, count


def confirm_client(session: Session, *, query: ClientQuery) -> dict[str, str]:
    """The client's pseudonym and org if the org holds it; another org's is none (F7).

    Ids only cross: the record itself never leaves intake here.
    """
    client = repository.get_client(session, org=query.org, client_ref=query.client_ref)
    if client is None:
        raise NotFound("No such client in this organisation.")
    return {"client_ref": client.client_ref, "org": client.org}


def disclose(session: Session, *, request: DisclosureRequest) -> DisclosureReply:
    """Build the disclosure package the bridge asks for: exactly the asked categories (F2).

    Only the bridge can ask (the broker config allows no one else to publish the call subject);
    the client must belong to the org the bridge names, or it is indistinguishable from none (F7).
    """
    client = repository.get_client(session, org=request.org, client_ref=request.client_ref)
    if client is None:
        raise NotFound("No such client in this organisation.")
    package = disclosure_package(client.model_dump(), request.categories)
    # F2/F8: the disclosure is recorded by ids and categories, never by the values it carried.
    record_audit(
        session,
        service="intake",
        action="disclose",
        actor=None,
        resource_type="client",
        resource_id=client.client_ref,
        org=client.org,
        categories=list(package),
        requested_by="referral",
        purpose="referral",
    )
    return DisclosureReply(client_ref=client.client_ref, categories=package)
