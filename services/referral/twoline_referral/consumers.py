"""Referral consumers: consent facts on the `firstline` link, zone-B status on `secondline`.

One function per event type, each a call into `service.py`. Payloads are validated: a malformed
event raises, and the kernel sets it aside in the dead-letter table.
"""

from sqlmodel import Session

from twoline_referral import service
from twoline_referral.consents import ConsentSource
from twoline_referral.disclosure import Fetcher
from twoline_referral.models import (
    ConsentGranted,
    ConsentWithdrawn,
    DisclosureRead,
    DisclosureRequested,
    TrackStatusChanged,
)
from twoline_shared.events import Event
from twoline_shared.inbox import ConsumerBinding, Handler

TRACK_STATUS = "secondline.case.track."
DISCLOSURE_REQUESTED = "secondline.case.disclosure.requested"
DISCLOSURE_READ = "secondline.case.disclosure.read"


def on_consent_granted(fetch_disclosure: Fetcher, consents: ConsentSource) -> Handler:
    """A grant; one that covers a pending step-up request asks intake and releases it (F5)."""

    def handle(session: Session, event: Event) -> None:
        service.record_consent_granted(
            session,
            data=ConsentGranted.model_validate(event.data),
            fetch_disclosure=fetch_disclosure,
            consents=consents,
        )

    return handle


def on_consent_withdrawn(session: Session, event: Event) -> None:
    service.record_consent_withdrawn(session, data=ConsentWithdrawn.model_validate(event.data))


def on_track_status(session: Session, event: Event) -> None:
    """accepted, rejected, status-changed, completed: one payload, the verb names the kind."""
    service.record_track_status(
        session,
        verb=event.type.removeprefix(TRACK_STATUS),
        data=TrackStatusChanged.model_validate(event.data),
    )


def on_disclosure_requested(session: Session, event: Event) -> None:
    """Zone B asks for more categories of a track (F5): kept for the NGO to answer."""
    service.record_disclosure_request(session, data=DisclosureRequested.model_validate(event.data))


def on_disclosure_read(session: Session, event: Event) -> None:
    """Zone B showed a disclosure to a case worker (F9): kept for the person's access log."""
    service.record_disclosure_read(session, data=DisclosureRead.model_validate(event.data))


def bindings(*, fetch_disclosure: Fetcher, consents: ConsentSource) -> list[ConsumerBinding]:
    """The bridge's two durable consumers; `fetch_disclosure` asks intake for a step-up release
    and `consents` the consent service whether its grant still holds (the running service
    passes both over its first-line link, tests stand-ins)."""
    firstline: dict[str, Handler] = {
        "firstline.consent.consent.granted": on_consent_granted(fetch_disclosure, consents),
        "firstline.consent.consent.withdrawn": on_consent_withdrawn,
    }
    secondline: dict[str, Handler] = {
        TRACK_STATUS + ">": on_track_status,
        DISCLOSURE_REQUESTED: on_disclosure_requested,
        DISCLOSURE_READ: on_disclosure_read,
    }
    return [
        ConsumerBinding(
            stream="FIRSTLINE", durable="referral", connection="firstline", handlers=firstline
        ),
        ConsumerBinding(
            stream="SECONDLINE", durable="referral", connection="secondline", handlers=secondline
        ),
    ]
