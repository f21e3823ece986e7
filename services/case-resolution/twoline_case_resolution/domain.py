"""Case rules without I/O: who performs which track, which task status may follow which, what a
disclosure package must look like, and the track work (options, return steps, client decisions).

The status codes and the "who may set it" rule are those of FHIR Task in the HL7 Gravity
closed-loop referral guide: the requester (the NGO, through the referral bridge) sets `requested`
and may set `cancelled`; the performer (the second-line case worker) sets the rest.
"""

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from twoline_shared.auth import ROLE_AGENCY, Agency, Role
from twoline_shared.codes import DataCategory, Outcome, StatusReason, TaskStatus, Track
from twoline_shared.errors import Conflict, Forbidden, Invalid, NotFound
from twoline_shared.tasks import MAY_SET, NEEDS_REASON, NEXT, TERMINAL, Party

__all__ = ["MAY_SET", "NEEDS_REASON", "NEXT", "TERMINAL", "Party"]

# The second-line role that performs each track; its agency is the one whose case holds the track.
PERFORMER_ROLE: dict[Track, Role] = {
    Track.LEGAL_STAY: Role.ICAM_COACH,
    Track.RETURN: Role.RETURN_COUNSELLOR,
}

# Reasons only the requester's side knows to be true: the bridge sends them (F4), a case worker
# cannot claim them.
REQUESTER_REASONS = frozenset({StatusReason.CONSENT_WITHDRAWN, StatusReason.REQUESTER_CANCELLED})
# Likewise an outcome that only a withdrawal through the bridge can produce.
REQUESTER_OUTCOMES = frozenset({Outcome.CONSENT_WITHDRAWN})

# The statuses in which the performer works on the track.
ACTIVE = frozenset({TaskStatus.ACCEPTED, TaskStatus.IN_PROGRESS, TaskStatus.ON_HOLD})


class NotYourTrack(Forbidden):
    slug, title = "not-your-track", "This track is not yours to change"


class IllegalTransition(Conflict):
    slug, title = "illegal-transition", "The task cannot move to that status"


class ReasonRequired(Invalid):
    slug, title = "reason-required", "This status needs a reason"


class ReasonNotAllowed(Invalid):
    slug, title = "reason-not-allowed", "This reason cannot be set here"


class OutcomeNotAllowed(Invalid):
    slug, title = "outcome-not-allowed", "This outcome cannot be set here"


class TrackNotActive(Conflict):
    slug, title = "track-not-active", "The track is not being worked on"


class IllegalStep(Conflict):
    slug, title = "illegal-step", "The return track cannot move to that step"


class InvalidDisclosure(Invalid):
    slug, title = "invalid-disclosure", "The disclosure package breaks its contract"


class CategoryAlreadyDisclosed(Invalid):
    slug, title = "category-already-disclosed", "The category is already disclosed"


class DisclosureRequestPending(Conflict):
    slug, title = "disclosure-request-pending", "A disclosure request is already pending"


class DisclosureWithdrawn(Conflict):
    """The bridge's answer to a key request once the consent is withdrawn (its key destroyed)."""

    slug, title = "disclosure-withdrawn", "The consent for this disclosure was withdrawn"


def agency_for(track: Track) -> Agency:
    """The agency that performs `track`: legal stay is ICAM's, return is Fedasil's."""
    return ROLE_AGENCY[PERFORMER_ROLE[track]]


def performs(*, roles: Iterable[str], agency: str | None, track: Track) -> bool:
    """Whether a second-line caller is the performer of `track`: the right role in its agency."""
    role = PERFORMER_ROLE[track]
    return role.value in set(roles) and agency == ROLE_AGENCY[role].value


def reader_role(roles: Iterable[str], *, agency: str) -> str:
    """The second-line role a reader of `agency`'s case reads in (F9: a role, never a name)."""
    fitting = sorted(
        r.value for r, a in ROLE_AGENCY.items() if r.value in set(roles) and a == agency
    )
    return fitting[0] if fitting else "second_line"


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


def check_performer_change(
    *,
    current: TaskStatus,
    target: TaskStatus,
    reason: StatusReason | None = None,
    outcome: Outcome | None = None,
) -> None:
    """The whole rule for a performer's status change: reason and outcome fit, the move is legal.

    Raises ReasonNotAllowed / OutcomeNotAllowed / ReasonRequired (422) or IllegalTransition (409).
    """
    check_may_set(party=Party.PERFORMER, target=target)
    if reason in REQUESTER_REASONS:
        raise ReasonNotAllowed(f"Only the requester's side sets the reason {reason.value!r}.")
    if reason is not None and target not in NEEDS_REASON:
        raise ReasonNotAllowed(f"The status {target.value!r} takes no reason.")
    if outcome in REQUESTER_OUTCOMES:
        raise OutcomeNotAllowed(f"Only a withdrawal through the bridge sets {outcome.value!r}.")
    if (outcome is not None) != (target == TaskStatus.COMPLETED):
        raise OutcomeNotAllowed("An outcome is set when, and only when, the track is completed.")
    check_transition(current=current, target=target, reason=reason)


def cancel_on_arrival(*, reasons: Sequence[StatusReason]) -> tuple[StatusReason, bool]:
    """How cancels that came before their track apply once it arrives: as if they came after.

    `reasons` oldest first. Returns the status reason (the first cancel's: the task was requested
    and moves to cancelled once) and whether the package is withheld (F4: any withdrawal among
    them, as a later withdrawal purges a cancelled case).
    """
    if not reasons:
        raise ValueError("no cancel to apply")
    check_may_set(party=Party.REQUESTER, target=TaskStatus.CANCELLED)
    check_transition(current=TaskStatus.REQUESTED, target=TaskStatus.CANCELLED, reason=reasons[0])
    return reasons[0], StatusReason.CONSENT_WITHDRAWN in reasons


def check_track_work(*, status: TaskStatus) -> None:
    """Raise TrackNotActive (409) unless the track is accepted, in progress or on hold."""
    if status not in ACTIVE:
        raise TrackNotActive(
            f"Work is recorded only on an active track, not a {status.value!r} one."
        )


def check_track_in_path(*, case_track: Track, path_track: Track) -> None:
    """Raise NotFound unless the case holds the track the path names."""
    if case_track != path_track:
        raise NotFound(f"This case holds no {path_track.value!r} track.")


# ---------------------------------------------------------------- disclosure


def check_categories(categories: list[str]) -> None:
    """The categories of a disclosure are known data categories, each named once.

    Raises InvalidDisclosure: the consumer then dead-letters the routed event.
    """
    unknown = [c for c in categories if c not in DataCategory.__members__.values()]
    if unknown:
        raise InvalidDisclosure("The disclosure names a category that is not a data category.")
    if len(set(categories)) != len(categories):
        raise InvalidDisclosure("The disclosure names a category twice.")


def check_disclosure(*, categories: list[str], package: Mapping[str, Any]) -> None:
    """A package holds exactly one object per disclosed category, each a known code (F2).

    The package arrives sealed, so this runs each time it is opened, before anything is shown:
    data the consent did not cover is never shown (InvalidDisclosure).
    """
    check_categories(categories)
    if set(package) != set(categories):
        raise InvalidDisclosure("The package keys are not exactly the disclosed categories.")
    if not all(isinstance(value, dict) for value in package.values()):
        raise InvalidDisclosure("Each category of the package must be an object.")


# ---------------------------------------------------------------- step-up requests (F5)


class DisclosureRequestReason(StrEnum):
    """Why a case worker asks the NGO for more categories: a code, never free text (F8)."""

    ASSESS_LEGAL_STAY_OPTION = "assess_legal_stay_option"
    TRAVEL_DOCUMENTS = "travel_documents"
    IDENTITY_VERIFICATION = "identity_verification"
    MEDICAL_ASSESSMENT = "medical_assessment"
    FAMILY_LINK = "family_link"
    OTHER = "other"


class DisclosureRequestStatus(StrEnum):
    PENDING = "pending"
    RELEASED = "released"  # a new consent released an updated package
    REFUSED = "refused"  # the NGO refused (the person did not consent)


def check_step_up(*, requested: Iterable[str], disclosed: Iterable[str], pending: bool) -> None:
    """A step-up asks only for categories not disclosed yet, one request at a time (F5)."""
    already = sorted(set(requested) & set(disclosed))
    if already:
        raise CategoryAlreadyDisclosed(
            "Already disclosed: " + ", ".join(already) + ".", categories=already
        )
    if pending:
        raise DisclosureRequestPending("This case already has a pending disclosure request.")


# ---------------------------------------------------------------- legal stay: options


class LegalStayOption(StrEnum):
    HUMANITARIAN_9BIS = "9bis"
    MEDICAL_9TER = "9ter"
    FAMILY_REUNIFICATION = "family_reunification"
    INTERNATIONAL_PROTECTION = "international_protection"
    STATELESSNESS = "statelessness"
    WORK_OR_STUDY_PERMIT = "work_or_study_permit"
    OTHER = "other"


class Assessment(StrEnum):
    VIABLE = "viable"
    NOT_VIABLE = "not_viable"
    NEEDS_INFO = "needs_info"
    APPLIED = "applied"
    GRANTED = "granted"
    REFUSED = "refused"


def check_has_options(*, track: Track) -> None:
    """Only the legal-stay track assesses options."""
    if track != Track.LEGAL_STAY:
        raise NotFound(f"A {track.value!r} track has no legal-stay options.")


# ---------------------------------------------------------------- return: steps


class ReturnStep(StrEnum):
    INFORMING = "informing"
    CONSIDERING = "considering"
    REGISTERED = "registered"
    PREPARING = "preparing"
    DEPARTED = "departed"
    FOLLOW_UP = "follow_up"
    DECLINED_BY_CLIENT = "declined_by_client"


R = ReturnStep

# None is "no step yet". The person may decline until departure and reconsider after declining;
# `preparing` may repeat, to update the preparation.
STEP_NEXT: dict[ReturnStep | None, frozenset[ReturnStep]] = {
    None: frozenset({R.INFORMING, R.CONSIDERING}),
    R.INFORMING: frozenset({R.CONSIDERING, R.DECLINED_BY_CLIENT}),
    R.CONSIDERING: frozenset({R.REGISTERED, R.DECLINED_BY_CLIENT}),
    R.REGISTERED: frozenset({R.PREPARING, R.DECLINED_BY_CLIENT}),
    R.PREPARING: frozenset({R.PREPARING, R.DEPARTED, R.DECLINED_BY_CLIENT}),
    R.DEPARTED: frozenset({R.FOLLOW_UP}),
    R.FOLLOW_UP: frozenset(),
    R.DECLINED_BY_CLIENT: frozenset({R.CONSIDERING}),
}


def check_has_steps(*, track: Track) -> None:
    """Only the return track goes through return steps."""
    if track != Track.RETURN:
        raise NotFound(f"A {track.value!r} track has no return steps.")


def check_step(*, current: ReturnStep | None, target: ReturnStep, with_preparation: bool) -> None:
    """Raise IllegalStep (409) unless `current -> target` is a legal step; preparation details
    belong to the `preparing` step only (422)."""
    if with_preparation and target != R.PREPARING:
        raise Invalid("Preparation details belong to the 'preparing' step.")
    if target not in STEP_NEXT[current]:
        where = f"from {current.value!r}" if current else "as the first step"
        raise IllegalStep(f"The return track cannot move {where} to {target.value!r}.")


# ---------------------------------------------------------------- client decisions


class ClientDecision(StrEnum):
    PURSUE_LEGAL_STAY = "pursue_legal_stay"
    DECLINE_LEGAL_STAY = "decline_legal_stay"
    ACCEPT_RETURN = "accept_return"
    DECLINE_RETURN = "decline_return"
    UNDECIDED = "undecided"


# The decisions that may name a legal-stay option.
DECISIONS_WITH_OPTION = frozenset(
    {ClientDecision.PURSUE_LEGAL_STAY, ClientDecision.DECLINE_LEGAL_STAY}
)


def check_decision(*, decision: ClientDecision, option: LegalStayOption | None) -> None:
    """A legal-stay option only goes with a legal-stay decision (422)."""
    if option is not None and decision not in DECISIONS_WITH_OPTION:
        raise Invalid(f"The decision {decision.value!r} names no legal-stay option.")


def step_after_decision(
    *, track: Track, decision: ClientDecision, current: ReturnStep | None
) -> ReturnStep | None:
    """The return step a client decision moves a return case to, or None for no move.

    The person keeps ownership of the decision: declining moves the case to `declined_by_client`
    wherever that step is reachable; accepting registers a person still informing or considering.
    """
    if track != Track.RETURN:
        return None
    if decision == ClientDecision.DECLINE_RETURN and R.DECLINED_BY_CLIENT in STEP_NEXT[current]:
        return R.DECLINED_BY_CLIENT
    if decision == ClientDecision.ACCEPT_RETURN and current in (R.INFORMING, R.CONSIDERING):
        return R.REGISTERED
    return None
