"""All intake queries. Every read is scoped to the caller's org (F7)."""

import uuid

from sqlalchemy import func
from sqlmodel import Session, select

from twoline_intake.models import Client, Contact


def get_client(session: Session, *, org: str, client_ref: str) -> Client | None:
    return session.exec(
        select(Client).where(Client.org == org, Client.client_ref == client_ref)
    ).first()


def list_clients(
    session: Session, *, org: str, offset: int, limit: int
) -> tuple[list[Client], int]:
    query = select(Client).where(Client.org == org)
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(Client.created_at.desc(), Client.client_ref).offset(offset).limit(limit)  # type: ignore[attr-defined]
    ).all()
    return list(rows), count


def add_client(session: Session, *, client: Client) -> Client:
    session.add(client)
    session.flush()
    return client


def add_contact(session: Session, *, contact: Contact) -> Contact:
    session.add(contact)
    session.flush()
    return contact


def get_contact(session: Session, *, client: Client, contact_id: uuid.UUID) -> Contact | None:
    return session.exec(
        select(Contact).where(Contact.client_id == client.id, Contact.id == contact_id)
    ).first()


def list_contacts(
    session: Session, *, client: Client, offset: int, limit: int
) -> tuple[list[Contact], int]:
    query = select(Contact).where(Contact.client_id == client.id)
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(Contact.date.desc(), Contact.created_at.desc())  # type: ignore[attr-defined]
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count
