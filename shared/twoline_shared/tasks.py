"""The FHIR Task state machine of a referral track, as both sides of the firewall apply it.

HL7 Gravity closed-loop referral: the requester (the NGO, through the bridge) sets `requested`
and may set `cancelled`; the performer (the second-line case worker) sets the rest. `rejected`,
`cancelled`, `on-hold` and `failed` need a reason; nothing leaves a terminal status. The bridge
and zone B each check a move with the same table, so neither can drift into a state the other
cannot follow.
"""

from enum import StrEnum

from twoline_shared.codes import TERMINAL_STATUSES, TaskStatus

S = TaskStatus


class Party(StrEnum):
    """The two sides of a referral task."""

    REQUESTER = "requester"
    PERFORMER = "performer"


MAY_SET: dict[Party, frozenset[TaskStatus]] = {
    Party.REQUESTER: frozenset({S.REQUESTED, S.CANCELLED}),
    Party.PERFORMER: frozenset(
        {S.ACCEPTED, S.REJECTED, S.IN_PROGRESS, S.ON_HOLD, S.FAILED, S.COMPLETED, S.CANCELLED}
    ),
}

TERMINAL: frozenset[TaskStatus] = TERMINAL_STATUSES

NEEDS_REASON: frozenset[TaskStatus] = frozenset({S.REJECTED, S.CANCELLED, S.ON_HOLD, S.FAILED})

# The FHIR Task state machine without the states twoline does not use (draft, received, ready).
NEXT: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.REQUESTED: frozenset({S.ACCEPTED, S.REJECTED, S.CANCELLED}),
    S.ACCEPTED: frozenset({S.IN_PROGRESS, S.ON_HOLD, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.IN_PROGRESS: frozenset({S.ON_HOLD, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.ON_HOLD: frozenset({S.IN_PROGRESS, S.FAILED, S.CANCELLED}),
}


def can_move(current: str, target: str) -> bool:
    """True when a task in `current` may move to `target` (unknown codes never move)."""
    try:
        return TaskStatus(target) in NEXT.get(TaskStatus(current), frozenset())
    except ValueError:
        return False


def is_terminal(status: str) -> bool:
    return status in {s.value for s in TERMINAL}
