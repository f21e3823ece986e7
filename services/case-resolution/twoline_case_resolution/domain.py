"""Case rules without I/O: who performs which track, and who may set which task status from which.

The status codes and the "who may set it" rule are those of FHIR Task in the HL7 Gravity
closed-loop referral guide: the requester (the NGO, through the referral bridge) sets `requested`
and may set `cancelled`; the performer (the second-line case worker) sets the rest.
"""

from collections.abc import Iterable

from twoline_shared.auth import ROLE_AGENCY, Agency, Role
from twoline_shared.codes import TaskStatus, Track
from twoline_shared.errors import Conflict, Forbidden, Invalid
from twoline_shared.tasks import MAY_SET, NEEDS_REASON, NEXT, TERMINAL, Party

# The second-line role that performs each track; its agency is the one whose case holds the track.
PERFORMER_ROLE: dict[Track, Role] = {
    Track.LEGAL_STAY: Role.ICAM_COACH,
    Track.RETURN: Role.RETURN_COUNSELLOR,
}


class NotYourTrack(Forbidden):
    slug, title = "not-your-track", "This track is not yours to change"


class IllegalTransition(Conflict):
    slug, title = "illegal-transition", "The task cannot move to that status"


class ReasonRequired(Invalid):
    slug, title = "reason-required", "This status needs a reason"


def agency_for(track: Track) -> Agency:
    """The agency that performs `track`: legal stay is ICAM's, return is Fedasil's."""
    return ROLE_AGENCY[PERFORMER_ROLE[track]]


def performs(*, roles: Iterable[str], agency: str | None, track: Track) -> bool:
    """Whether a second-line caller is the performer of `track`: the right role in its agency."""
    role = PERFORMER_ROLE[track]
    return role.value in set(roles) and agency == ROLE_AGENCY[role].value


def check_may_set(*, party: Party | None, target: TaskStatus) -> None:
    """Raise NotYourTrack unless `party` is one that may set `target` at all (403)."""
    if party is None or target not in MAY_SET[party]:
        raise NotYourTrack(f"You may not set the status {target.value!r} on this track.")


def check_transition(*, current: TaskStatus, target: TaskStatus, reason: str | None = None) -> None:
    """Raise IllegalTransition (409) or ReasonRequired (422) unless `current -> target` is legal."""
    if current in TERMINAL:
        raise IllegalTransition(f"The task is {current.value!r}, a final status.")
    if target not in NEXT.get(current, frozenset()):
        raise IllegalTransition(f"A task cannot move from {current.value!r} to {target.value!r}.")
    if target in NEEDS_REASON and not reason:
        raise ReasonRequired(f"Setting {target.value!r} needs a reason code.")
