"""Events case-resolution consumes: tracks the referral bridge routed to an office queue."""

from sqlmodel import Session

from twoline_case_resolution import service
from twoline_case_resolution.models import TrackRouted
from twoline_shared.events import Event
from twoline_shared.inbox import ConsumerBinding

TRACK_ROUTED = "secondline.referral.track.routed"


def on_track_routed(session: Session, event: Event) -> None:
    """A track reached an office queue: open its case (once per track_id).

    A payload that breaks the contract raises, so the kernel retries it and then dead-letters it.
    """
    service.open_case(session, routed=TrackRouted.model_validate(event.data))


BINDINGS = [
    ConsumerBinding(
        stream="SECONDLINE",
        durable="case-resolution",
        handlers={TRACK_ROUTED: on_track_routed},
    )
]
