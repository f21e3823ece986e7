"""Referral consumers: zone-A facts on the `firstline` link, zone-B status on `secondline`.

One function per event type, each a call into `service.py`. Payloads are validated: a malformed
event raises, and the kernel sets it aside in the dead-letter table.
"""

from sqlmodel import Session

from twoline_referral import service
from twoline_referral.models import (
    ClientRegistered,
    ConsentGranted,
    ConsentWithdrawn,
    TrackStatusChanged,
)
from twoline_shared.events import Event
from twoline_shared.inbox import ConsumerBinding, Handler

TRACK_STATUS = "secondline.case.track."


def on_client_registered(session: Session, event: Event) -> None:
    service.record_client(session, data=ClientRegistered.model_validate(event.data))


def on_consent_granted(session: Session, event: Event) -> None:
    service.record_consent_granted(session, data=ConsentGranted.model_validate(event.data))


def on_consent_withdrawn(session: Session, event: Event) -> None:
    service.record_consent_withdrawn(session, data=ConsentWithdrawn.model_validate(event.data))


def on_track_status(session: Session, event: Event) -> None:
    """accepted, rejected, status-changed, completed: one payload, the verb names the kind."""
    service.record_track_status(
        session,
        verb=event.type.removeprefix(TRACK_STATUS),
        data=TrackStatusChanged.model_validate(event.data),
    )


FIRSTLINE_HANDLERS: dict[str, Handler] = {
    "firstline.intake.client.registered": on_client_registered,
    "firstline.consent.consent.granted": on_consent_granted,
    "firstline.consent.consent.withdrawn": on_consent_withdrawn,
}

SECONDLINE_HANDLERS: dict[str, Handler] = {
    TRACK_STATUS + ">": on_track_status,
}

BINDINGS: list[ConsumerBinding] = [
    ConsumerBinding(
        stream="FIRSTLINE", durable="referral", connection="firstline", handlers=FIRSTLINE_HANDLERS
    ),
    ConsumerBinding(
        stream="SECONDLINE",
        durable="referral",
        connection="secondline",
        handlers=SECONDLINE_HANDLERS,
    ),
]
