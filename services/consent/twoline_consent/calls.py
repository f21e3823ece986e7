"""Calls the consent service answers over NATS request/reply (`twoline_shared.calls`), each a
call into `service.py`. The broker config lets only the bridge (`referral-fl`) ask: it decides
every referral, and every release towards the second line, from these answers rather than from
its projection of the FIRSTLINE stream, which learns of a grant or a withdrawal only later."""

from typing import Any

from sqlmodel import Session

from twoline_consent import service
from twoline_consent.clients import ClientCheck
from twoline_consent.models import ActiveConsentsQuery, ConsentStatusQuery
from twoline_shared.calls import Responder

ACTIVE = "svc.consent.active"
STATUS = "svc.consent.status"


def responders(*, confirm: ClientCheck) -> list[Responder]:
    """The two calls; `confirm` asks intake about a client the service has not heard of yet."""

    def on_active(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        """A client's consents active now, and whether the client exists."""
        query = ActiveConsentsQuery.model_validate(payload)
        answer = service.active_consents(session, query=query, confirm=confirm)
        return answer.model_dump(mode="json")

    def on_status(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        """What some consents are now."""
        query = ConsentStatusQuery.model_validate(payload)
        return service.consent_status(session, query=query).model_dump(mode="json")

    return [Responder(ACTIVE, on_active), Responder(STATUS, on_status)]
