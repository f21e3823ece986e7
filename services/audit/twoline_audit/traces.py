"""Flow traces without I/O: which entries are about a referral, and what an auditor should see.

A referral's trace is every entry that names the referral, one of its tracks or one of its
consents, wherever it was recorded. Zone B never knows the referral (F5), so its entries are
found through the track ids the bridge recorded; the consent service's through the consent ids.
`entry_refs` is what the log indexes at append time; the trace itself is resolved at read time
from every ref, so an entry that arrived before the referral's own records is found too.

Findings compare facts recorded by different services. Entries sit in the log in arrival order,
which independent relays do not keep, so "before" means the earlier event time (the time the
fact was recorded by its service), the log index breaking ties. A fact one service emitted and
the next has not recorded yet is only a finding once it is older than a grace period.

Everything here is ids and codes, as in the entries themselves (F8).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from twoline_shared.auth import ROLE_AGENCY, Role
from twoline_shared.codes import TERMINAL_STATUSES, TRACK_AGENCY, StatusReason, Track
from twoline_shared.tasks import MAY_SET, Party

REFERRAL, TRACK, CONSENT = "referral", "track", "consent"
# Ids longer than this are no ids of ours: they are not indexed (the entry is appended anyway).
MAX_REF = 64

# Who sets a track's status in zone B: the track's performer role, in the track's agency.
PERFORMER: dict[str, tuple[str, str]] = {
    track.value: (role.value, agency.value)
    for track in Track
    for role, agency in ROLE_AGENCY.items()
    if agency == TRACK_AGENCY[track]
}
REQUESTER_ROLES = frozenset({Role.NGO_CASEWORKER.value, Role.NGO_ADMIN.value})
STATUS_ACTIONS = frozenset({"accept", "reject", "complete", "update"})
# The statuses zone B announces to the bridge (`secondline.case.track.*`).
ANNOUNCED = frozenset(MAY_SET[Party.PERFORMER])
TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
WITHDRAWN = StatusReason.CONSENT_WITHDRAWN.value


class FindingCode(StrEnum):
    DISCLOSURE_WITHOUT_CONSENT = "disclosure-without-consent"
    READ_AFTER_WITHDRAWAL = "read-after-withdrawal"
    STATUS_BY_WRONG_ROLE = "status-by-wrong-role"
    EVENT_NOT_CONSUMED = "event-not-consumed"


@dataclass(frozen=True)
class Finding:
    code: FindingCode
    indexes: list[int]
    text: str


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


# ---------------------------------------------------------------- refs (indexed at append)


def _named(data: dict[str, Any], *, linked: bool = True) -> dict[str, set[str]]:
    """The referral, track and consent ids an entry's data names, by kind (with or without
    the other agency's tracks a joint review linked)."""
    referrals = {_str(data.get("referral_id")), *_strs(data.get("referral_ids"))}
    # A referral's own records name it as their resource; a search is keyed by a client_ref.
    if data.get("resource_type") in ("referral", "access-log") and data.get("action") != "search":
        referrals.add(_str(data.get("resource_id")))
    tracks = {_str(data.get("track_id")), *_strs(data.get("track_ids"))}
    if linked:
        tracks.update(_strs(data.get("linked_track_ids")))
    # The bridge's track records name the track as their resource.
    if data.get("resource_type") == "track":
        tracks.add(_str(data.get("resource_id")))
    consents = {_str(data.get("consent_id")), _str(data.get("previous_consent_id"))}
    consents.update(_strs(data.get("consent_ids")))
    return {
        kind: {v for v in values if v is not None and len(v) <= MAX_REF}
        for kind, values in ((REFERRAL, referrals), (TRACK, tracks), (CONSENT, consents))
    }


def entry_refs(data: Any) -> set[tuple[str, str]]:
    """The (kind, id) pairs an entry is found by: kind is referral, track or consent."""
    if not isinstance(data, dict):
        return set()
    return {(kind, value) for kind, values in _named(data).items() for value in values}


def own_ids(data: Any) -> tuple[set[str], set[str]]:
    """The track and consent ids an entry *of the referral* says are the referral's.

    Not the other agency's tracks a joint review linked (`linked_track_ids`): they belong to
    another referral, whose trace shows the link.
    """
    if not isinstance(data, dict):
        return set(), set()
    named = _named(data, linked=False)
    return named[TRACK], named[CONSENT]


def belongs(data: Any, *, referral_id: str, tracks: set[str], consents: set[str]) -> bool:
    """Whether an entry found by one of the referral's refs is about this referral.

    An entry that names one of its tracks is; one that names only one of its consents is when
    it names no referral or track of its own (a grant, a withdrawal, a key destroyed): a later
    referral under the same consent has its own trace.
    """
    named = _named(data) if isinstance(data, dict) else {}
    if referral_id in named.get(REFERRAL, set()) or named.get(TRACK, set()) & tracks:
        return True
    return bool(named.get(CONSENT, set()) & consents) and not (
        named.get(REFERRAL) or named.get(TRACK)
    )


# ---------------------------------------------------------------- findings


@dataclass(frozen=True)
class Fact:
    """One entry of a trace, as the rules read it."""

    index: int
    time: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> str | None:
        return _str(self.data.get("service"))

    def get(self, key: str) -> str | None:
        return _str(self.data.get(key))

    def list(self, key: str) -> list[str]:
        return _strs(self.data.get(key))

    @property
    def track_id(self) -> str | None:
        """The track an entry is about (the bridge's track records name it as the resource)."""
        if self.get("resource_type") == "track":
            return self.get("resource_id") or self.get("track_id")
        return self.get("track_id")

    @property
    def at(self) -> datetime | None:
        try:
            at = datetime.fromisoformat(self.time)
        except (TypeError, ValueError):
            return None
        return at if at.tzinfo is not None else None

    @property
    def succeeded(self) -> bool:
        # zone B writes the track's outcome code into `outcome` on status records, so only
        # `denied` says the action did not happen.
        return self.get("outcome") != "denied"

    def is_(self, service: str, resource_type: str, *actions: str) -> bool:
        return (
            self.service == service
            and self.get("resource_type") == resource_type
            and self.get("action") in actions
            and self.succeeded
        )


def fact(*, index: int, time: str, source: str, data: Any) -> Fact:
    """A trace entry for the rules; its service from the record, else from its source."""
    fields = dict(data) if isinstance(data, dict) else {}
    if not _str(fields.get("service")):
        fields["service"] = source.removeprefix("twoline/") if source else None
    return Fact(index=index, time=time, data=fields)


def before(a: Fact, b: Fact) -> bool:
    """`a` happened before `b`: by event time where both have one, else by log position."""
    at_a, at_b = a.at, b.at
    if at_a is not None and at_b is not None and at_a != at_b:
        return at_a < at_b
    return a.index < b.index


def _older_than(f: Fact, *, now: datetime, grace: timedelta) -> bool:
    at = f.at
    return at is None or now - at > grace


def _consent_records(facts: list[Fact], consent_id: str, *actions: str) -> list[Fact]:
    return [
        f
        for f in facts
        if f.is_("consent", "consent", *actions) and f.get("consent_id") == consent_id
    ]


def _permits(grant: Fact, disclosure: Fact) -> bool:
    """The grant covers the disclosure: its agency, its purpose and its categories."""
    recipient, agency = grant.get("recipient"), disclosure.get("agency")
    if recipient and agency and recipient != agency:
        return False
    purposes, purpose = grant.list("purposes"), disclosure.get("purpose")
    if purpose and "purposes" in grant.data and purpose not in purposes:
        return False
    granted = set(grant.list("categories"))
    return "categories" not in grant.data or set(disclosure.list("categories")) <= granted


def _disclosures_without_consent(
    facts: list[Fact], *, referral_id: str, now: datetime, grace: timedelta
) -> Iterator[Finding]:
    for d in facts:
        if not (
            d.is_("referral", "track", "disclose") or d.is_("referral", "joint-review", "disclose")
        ):
            continue
        if d.get("referral_id") not in (None, referral_id):
            continue  # another referral's joint review linking to this one: judged in its trace
        consent_id = d.get("consent_id")
        if consent_id is None:
            yield Finding(
                FindingCode.DISCLOSURE_WITHOUT_CONSENT,
                [d.index],
                f"{d.get('resource_type')} {d.get('resource_id')} disclosed under no consent id",
            )
            continue
        grants = _consent_records(facts, consent_id, "create")
        withdrawals = [w for w in _consent_records(facts, consent_id, "withdraw") if before(w, d)]
        if withdrawals:
            yield Finding(
                FindingCode.DISCLOSURE_WITHOUT_CONSENT,
                [d.index, withdrawals[0].index],
                f"{d.get('resource_type')} {d.get('resource_id')} disclosed under consent "
                f"{consent_id} after its withdrawal",
            )
        elif not grants and not _older_than(d, now=now, grace=grace):
            continue  # the grant's own record may still be on its way to the log
        elif not any(before(g, d) and _permits(g, d) for g in grants):
            yield Finding(
                FindingCode.DISCLOSURE_WITHOUT_CONSENT,
                [d.index, *(g.index for g in grants)],
                f"{d.get('resource_type')} {d.get('resource_id')} disclosed to "
                f"{d.get('agency')} ({d.get('purpose')}, {sorted(d.list('categories'))}) with no "
                f"earlier grant of consent {consent_id} that permits it",
            )


def _consent_of(facts: list[Fact], track_id: str, at: Fact) -> str | None:
    """The consent the bridge last disclosed `track_id` under, before `at`."""
    disclosed = [
        f
        for f in facts
        if f.is_("referral", "track", "disclose") and f.track_id == track_id and before(f, at)
    ]
    return disclosed[-1].get("consent_id") if disclosed else None


def _withdrawn(facts: list[Fact], *, track_id: str, consent_id: str | None) -> list[Fact]:
    """Every record saying the track's disclosure was withdrawn or purged."""
    found: list[Fact] = []
    for f in facts:
        if f.is_("case-resolution", "case-disclosure", "purge") and f.track_id == track_id:
            found.append(f)
        elif consent_id is None or f.get("consent_id") != consent_id:
            continue
        elif (
            f.is_("consent", "consent", "withdraw")
            or f.is_("referral", "disclosure-key", "destroy")
            or (f.is_("referral", "track", "cancel") and f.get("reason") == WITHDRAWN)
        ):
            found.append(f)
    return found


def _reads_after_withdrawal(facts: list[Fact]) -> Iterator[Finding]:
    for read in facts:
        if not read.is_("case-resolution", "case", "read") or not read.list("categories"):
            continue
        track_id = read.track_id
        if track_id is None:
            continue
        consent_id = _consent_of(facts, track_id, read)
        earlier = [
            w
            for w in _withdrawn(facts, track_id=track_id, consent_id=consent_id)
            if before(w, read)
        ]
        if earlier:
            first = min(earlier, key=lambda w: (w.at is None, w.at, w.index))
            yield Finding(
                FindingCode.READ_AFTER_WITHDRAWAL,
                [read.index, first.index],
                f"track {track_id} read with categories {sorted(read.list('categories'))} "
                f"after {first.get('resource_type')} {first.get('action')} of entry {first.index}",
            )


def _roles(f: Fact) -> set[str]:
    return set(f.list("roles"))


def _status_by_wrong_role(facts: list[Fact]) -> Iterator[Finding]:
    for f in facts:
        if f.is_("case-resolution", "case", *STATUS_ACTIONS) and f.get("status"):
            status, track = f.get("status"), f.get("track")
            role, agency = PERFORMER.get(track or "", (None, None))
            who = "/".join(["+".join(sorted(_roles(f))) or "no role", f.get("agency") or "-"])
            if role is None:
                problem = f"a track of unknown kind {track}"
            elif role not in _roles(f) or (f.get("agency") and f.get("agency") != agency):
                problem = f"{track} tracks are set by {role}/{agency}"
            elif status not in ANNOUNCED:
                problem = f"the performer never sets {status}"
            else:
                continue
            yield Finding(
                FindingCode.STATUS_BY_WRONG_ROLE,
                [f.index],
                f"track {f.track_id} set to {status} by {who}: {problem}",
            )
        elif f.is_("referral", "referral", "cancel") and not _roles(f) & REQUESTER_ROLES:
            yield Finding(
                FindingCode.STATUS_BY_WRONG_ROLE,
                [f.index],
                f"referral {f.get('resource_id')} cancelled by "
                f"{'+'.join(sorted(_roles(f))) or 'no role'}: "
                "only the requester (an NGO role) cancels",
            )


def _bridge_stopped(facts: list[Fact], track_id: str) -> bool:
    """The bridge cancelled the track, so it ignores any later status from zone B."""
    return any(
        (f.is_("referral", "track", "cancel") and f.track_id == track_id)
        or (f.is_("referral", "referral", "cancel") and track_id in f.list("track_ids"))
        for f in facts
    )


def _zone_b_heard_cancel(facts: list[Fact], track_id: str) -> bool:
    """Zone B recorded the cancel, or had nothing to cancel (the track already closed)."""
    for f in facts:
        if f.service != "case-resolution" or f.track_id != track_id or not f.succeeded:
            continue
        if (
            f.is_("case-resolution", "case", "cancel")
            or f.is_("case-resolution", "case-pending-cancel", "create")
            or f.is_("case-resolution", "case-disclosure", "purge")
            or f.get("status") in TERMINAL
        ):
            return True
    return False


def _recorded(
    facts: list[Fact], service: str, resource_type: str, action: str, **equal: str | None
) -> bool:
    """Some entry records `service`'s `action` on `resource_type`, with these field values."""
    return any(
        f.is_(service, resource_type, action)
        and all((f.track_id if k == "track_id" else f.get(k)) == v for k, v in equal.items())
        for f in facts
    )


def _not_consumed(facts: list[Fact], *, now: datetime, grace: timedelta) -> Iterator[Finding]:
    for f in facts:
        if not _older_than(f, now=now, grace=grace):
            continue
        text = None
        track_id, status, request_id = f.track_id, f.get("status"), f.get("request_id")
        if f.is_("referral", "track", "disclose") and request_id is None:
            if not _recorded(facts, "case-resolution", "case", "create", track_id=track_id):
                text = f"track {track_id} routed by the bridge; case-resolution opened no case"
        elif f.is_("referral", "track", "disclose"):
            if not _recorded(
                facts, "case-resolution", "case-disclosure", "update", request_id=request_id
            ):
                text = (
                    f"track {track_id} step-up {request_id} released by the bridge; "
                    "case-resolution never stored it"
                )
        elif f.is_("case-resolution", "case", *STATUS_ACTIONS) and status in ANNOUNCED:
            if not (
                track_id is None
                or _bridge_stopped(facts, track_id)
                or _recorded(facts, "referral", "track", "update", track_id=track_id, status=status)
            ):
                text = f"track {track_id} set to {status} in zone B; the bridge never recorded it"
        elif f.is_("referral", "track", "cancel") or f.is_("referral", "referral", "cancel"):
            cancelled = [track_id] if f.get("resource_type") == "track" else f.list("track_ids")
            unheard = [t for t in cancelled if t and not _zone_b_heard_cancel(facts, t)]
            if unheard:
                text = (
                    f"tracks {sorted(unheard)} cancelled by the bridge ({f.get('reason')}); "
                    "case-resolution never recorded the cancel"
                )
        elif f.is_("consent", "consent", "withdraw"):
            consent_id = f.get("consent_id")
            if _recorded(
                facts, "referral", "track", "disclose", consent_id=consent_id
            ) and not _recorded(
                facts, "referral", "disclosure-key", "destroy", consent_id=consent_id
            ):
                text = f"consent {consent_id} withdrawn; the bridge never destroyed its data key"
        if text is not None:
            yield Finding(FindingCode.EVENT_NOT_CONSUMED, [f.index], text)


def findings(
    facts: Iterable[Fact], *, referral_id: str, now: datetime, grace: timedelta
) -> list[Finding]:
    """Everything in a referral's trace an auditor should look at, in log order of the first
    entry each names."""
    ordered = sorted(facts, key=lambda f: f.index)
    found = [
        *_disclosures_without_consent(ordered, referral_id=referral_id, now=now, grace=grace),
        *_reads_after_withdrawal(ordered),
        *_status_by_wrong_role(ordered),
        *_not_consumed(ordered, now=now, grace=grace),
    ]
    return sorted(found, key=lambda f: (f.indexes[0], f.code))
