"""Calls intake answers over NATS request/reply (`twoline_shared.calls`), each a call into
`service.py`. The broker config lets only the bridge (`referral-fl`) ask."""

from typing import Any

from sqlmodel import Session

from twoline_intake import service
from twoline_intake.models import DisclosureRequest
from twoline_shared.calls import Responder

DISCLOSURE = "svc.intake.disclosure"


def on_disclosure(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    """The disclosure package for one referral: the asked categories of one of the org's clients."""
    reply = service.disclose(session, request=DisclosureRequest.model_validate(payload))
    return reply.model_dump(mode="json")


RESPONDERS: list[Responder] = [Responder(DISCLOSURE, on_disclosure)]
