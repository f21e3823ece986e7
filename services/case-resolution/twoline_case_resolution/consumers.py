"""Events case-resolution consumes from the referral bridge: tracks routed and cancelled."""

from sqlmodel import Session

from twoline_case_resolution import service
from twoline_case_resolution.models import (
    DisclosureRefused,
    DisclosureReleased,
    TrackCancelled,
    TrackRouted,
)
from twoline_shared.events import Event
from twoline_shared.inbox import ConsumerBinding

TRACK_ROUTED = "secondline.referral.track.routed"
TRACK_CANCELLED = "secondline.referral.track.cancelled"
DISCLOSURE_RELEASED = "secondline.referral.disclosure.released"
DISCLOSURE_REFUSED = "secondline.referral.disclosure.refused"


def on_track_routed(session: Session, event: Event) -> None:
    """A track reached an office queue: open its case (once per track_id).

    A payload that breaks the contract raises, so the kernel retries it and then dead-letters it.
    """
    service.open_case(session, routed=TrackRouted.model_validate(event.data))


def on_track_cancelled(session: Session, event: Event) -> None:
    """The requester cancelled the track, or the consent was withdrawn (F4): close and purge."""
    service.cancel_by_requester(session, cancelled=TrackCancelled.model_validate(event.data))


def on_disclosure_released(session: Session, event: Event) -> None:
    """A new consent released a step-up request: the case's sealed package is replaced (F5)."""
    service.record_disclosure_released(
        session, released=DisclosureReleased.model_validate(event.data)
    )


def on_disclosure_refused(session: Session, event: Event) -> None:
    """The NGO refused a step-up request: the case worker sees it refused."""
    service.record_disclosure_refused(session, refused=DisclosureRefused.model_validate(event.data))


BINDINGS = [
    ConsumerBinding(
        stream="SECONDLINE",
        durable="case-resolution",
        handlers={
            TRACK_ROUTED: on_track_routed,
            TRACK_CANCELLED: on_track_cancelled,
            DISCLOSURE_RELEASED: on_disclosure_released,
            DISCLOSURE_REFUSED: on_disclosure_refused,
        },
    )
]
