"""Intake use cases: load, apply the rule, save, queue events and audit records."""

from sqlmodel import Session

from twoline_intake import repository
from twoline_intake.domain import categories_present
from twoline_intake.models import Client, ClientCreate
from twoline_shared.audit import record_audit
from twoline_shared.auth import Principal
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


def read_client(session: Session, *, principal: Principal, client_ref: str) -> Client:
    """A client of the caller's org; another org's client is indistinguishable from none (F7)."""
    client = repository.get_client(session, org=principal.org or "", client_ref=client_ref)
    if client is None:
        raise NotFound(f"No client {client_ref!r} in your organisation.")
    record_audit(
        session,
        service="intake",
        action="read",
        actor=principal,
        resource_type="client",
        resource_id=client.client_ref,
    )
    return client


def list_clients(
    session: Session, *, principal: Principal, offset: int, limit: int
) -> tuple[list[Client], int]:
    return repository.list_clients(session, org=principal.org or "", offset=offset, limit=limit)
