"""Consent consumers: intake's facts about which org owns which client.

One function per event type, each a call into `service.py`. A malformed payload raises, so the
kernel retries it and dead-letters it after `max_deliver`.
"""

from sqlmodel import Session

from twoline_consent import service
from twoline_consent.models import ClientRegistered
from twoline_shared.events import Event
from twoline_shared.inbox import ConsumerBinding, Handler


def on_client_registered(session: Session, event: Event) -> None:
    service.record_client(session, data=ClientRegistered.model_validate(event.data))


HANDLERS: dict[str, Handler] = {
    "firstline.intake.client.registered": on_client_registered,
}

BINDINGS: list[ConsumerBinding] = [
    ConsumerBinding(stream="FIRSTLINE", durable="consent", handlers=HANDLERS),
]
