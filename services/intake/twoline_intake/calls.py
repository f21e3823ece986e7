"""Calls intake answers over NATS request/reply (`twoline_shared.calls`), each a call into
`service.py`. The broker config lets only the bridge (`referral-fl`) ask for a disclosure, and
only the consent service ask whether a client exists."""

from typing import Any

from sqlmodel import Session

from twoline_intake import service
from twoline_intake.models import ClientQuery, DisclosureRequest
from twoline_shared.calls import Responder

DISCLOSURE = "svc.intake.disclosure"
CLIENT = "svc.intake.client"


def on_disclosure(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    """The disclosure package for one referral: the asked categories of one of the org's clients."""
    reply = service.disclose(session, request=DisclosureRequest.model_validate(payload))
    return reply.model_dump(mode="json")


def on_client(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    """Whether one org holds a client: the consent service's read of intake's own state."""
    return service.confirm_client(session, query=ClientQuery.model_validate(payload))


RESPONDERS: list[Responder] = [Responder(DISCLOSURE, on_disclosure), Responder(CLIENT, on_client)]
