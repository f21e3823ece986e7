"""Outcome statistics without I/O: facts read off audit records, grouped, counted, suppressed.

Only metadata is used: the record `type`, its `time`, and the ids and codes of its `data`. The
output holds codes and counts, never an id of anyone (F8).

Which records count — one authoritative source per figure, so nothing is counted twice:

- clients reached: intake's `client.create` (one per `client_ref`);
- referrals per track: the bridge's `referral.create`, one per track in it; it is written in the
  transaction that routes the tracks, so its time is the routing time (the per-track `disclose`
  records of the same transaction, and the bridge's `track.update` mirrors of zone B's status
  changes, are not counted);
- accepted, rejected, completed: zone B's `case.accept`, `case.reject`, `case.complete` (the
  performer's own act); completed by outcome category via `OUTCOME_CATEGORY`;
- consents withdrawn: consent's `consent.withdraw` (one per consent).

Records with `outcome` `denied` (refusals) never count. A track counts at most once per figure,
at its first record. Every figure counts what happened in the period, by its own record's time;
the medians (days from routing to acceptance / completion) are over the acceptances and
completions in the period, joined on `track_id` to the referral's routing time whenever that was.
Zone B's records carry the track (hence the agency), never a referral id; the office comes from
the join ("unknown" when the referral record is not in the log).

Small-cell suppression: a count below `THRESHOLD` (0 included) is withheld, shown as
`SUPPRESSED`. Then every set of parts that add up to a total — a breakdown and its `total` within
a row, and each figure over the rows and the `total` row — is checked until nothing changes:

- a shown total with withheld parts: those must be at least two and add up to at least
  `THRESHOLD`, or the next smallest shown part is withheld too (with no part left, the total);
- a withheld total: at least one part is withheld with it (the smallest), or the parts add up to it.

So no withheld cell can be worked out by adding or subtracting shown ones, and subtraction never
yields a number below `THRESHOLD`. Every withheld cell carries the one marker, so a reader cannot
tell a small cell from one withheld to protect it. A median is shown only from `THRESHOLD` or
more tracks and only beside its count (accepted, completed total) when that is shown.
"""

import contextlib
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from twoline_shared.codes import (
    OUTCOME_CATEGORY,
    TRACK_AGENCY,
    Agency,
    Outcome,
    OutcomeCategory,
    Track,
)

THRESHOLD = 5
SUPPRESSED = f"<{THRESHOLD}"

CLIENT_CREATED = "audit.intake.client.create"
REFERRAL_CREATED = "audit.referral.referral.create"
CASE_ACCEPTED = "audit.case-resolution.case.accept"
CASE_REJECTED = "audit.case-resolution.case.reject"
CASE_COMPLETED = "audit.case-resolution.case.complete"
CONSENT_WITHDRAWN = "audit.consent.consent.withdraw"

# The records a period's figures are read from; the referral records are also needed from
# before the period, for the routing time of tracks accepted or completed in it.
PERIOD_TYPES = (
    CLIENT_CREATED,
    REFERRAL_CREATED,
    CASE_ACCEPTED,
    CASE_REJECTED,
    CASE_COMPLETED,
    CONSENT_WITHDRAWN,
)
JOIN_TYPES = (REFERRAL_CREATED,)


class By(StrEnum):
    AGENCY = "agency"
    OFFICE = "office"
    TRACK = "track"
    OUTCOME = "outcome"
    MONTH = "month"


class Kind(StrEnum):
    CLIENT = "clients_reached"
    REFERRED = "referrals"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    COMPLETED = "completed"
    WITHDRAWN = "consents_withdrawn"


TRACK_KINDS = frozenset({Kind.REFERRED, Kind.ACCEPTED, Kind.REJECTED, Kind.COMPLETED})
CATEGORIES = tuple(c.value for c in OutcomeCategory)
AGENCY_TRACK = {agency: track for track, agency in TRACK_AGENCY.items()}

# The cells of a row, in order: a figure, or `figure.part` of a breakdown with its `.total`.
REFERRAL_PARTS = tuple(f"referrals.{t.value}" for t in Track)
COMPLETED_PARTS = tuple(f"completed.{c}" for c in CATEGORIES)
CELLS = (
    Kind.CLIENT.value,
    *REFERRAL_PARTS,
    "referrals.total",
    Kind.ACCEPTED.value,
    Kind.REJECTED.value,
    *COMPLETED_PARTS,
    "completed.total",
    Kind.WITHDRAWN.value,
)
UNKNOWN = "unknown"
ALL = "all"
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Record:
    """What an audit entry says, as far as statistics go."""

    type: str
    time: str
    data: Any


@dataclass(frozen=True)
class Fact:
    """One countable thing that happened: codes and a time, no id beyond the dedup key."""

    kind: Kind
    key: str
    at: datetime
    track: Track | None = None
    agency: str | None = None
    office: str | None = None
    outcome: Outcome | None = None
    # Days from the track's routing to this fact (acceptance, completion), if known.
    days: float | None = None

    def cell(self) -> str:
        if self.kind is Kind.REFERRED:
            return f"referrals.{self.track}"
        if self.kind is Kind.COMPLETED and self.outcome is not None:
            return f"completed.{OUTCOME_CATEGORY[self.outcome].value}"
        return self.kind.value


@dataclass(frozen=True)
class Routed:
    at: datetime
    track: Track
    agency: str
    office: str | None


# ---------------------------------------------------------------- time


def parse_time(text: Any) -> datetime | None:
    """An event time (RFC 3339) as an aware UTC datetime; None if it does not parse."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def day_start(day: date | None) -> datetime | None:
    """Midnight UTC at the start of `day`: periods are whole UTC days."""
    return datetime.combine(day, time.min, tzinfo=UTC) if day is not None else None


def text_bounds(*, since: date | None, until: date | None) -> tuple[str | None, str | None]:
    """Bounds to compare stored `time` text with: a day wider each side, so that a time with any
    UTC offset is read (the exact filter is `in_period`); None where open."""
    margin = timedelta(days=1)
    low = high = None
    with contextlib.suppress(OverflowError):
        low = (since - margin).isoformat() if since is not None else None
    with contextlib.suppress(OverflowError):
        high = (until + margin).isoformat() if until is not None else None
    return low, high


def in_period(at: datetime, *, start: datetime | None, end: datetime | None) -> bool:
    """Inclusive start, exclusive end; None is open."""
    return (start is None or at >= start) and (end is None or at < end)


# ---------------------------------------------------------------- facts


def _code(enum: type[E], value: Any) -> E | None:
    try:
        return enum(value)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def routing(records: Iterable[Record]) -> dict[str, Routed]:
    """Each track's routing (time, track, agency, office) from the bridge's referral records."""
    routed: dict[str, Routed] = {}
    for record in records:
        at = parse_time(record.time)
        data = record.data
        if record.type != REFERRAL_CREATED or at is None or not _counts(data):
            continue
        ids, tracks, offices = data.get("track_ids"), data.get("tracks"), data.get("offices")
        if not (isinstance(ids, list) and isinstance(tracks, list) and len(ids) == len(tracks)):
            continue
        offices = offices if isinstance(offices, list) and len(offices) == len(ids) else []
        for n, (track_id, code) in enumerate(zip(ids, tracks, strict=True)):
            track = _code(Track, code)
            if not isinstance(track_id, str) or track is None:
                continue
            known = routed.get(track_id)
            if known is None or at < known.at:
                office = _text(offices[n]) if offices else None
                # The agency follows from the track (one agency per track), so it always agrees.
                routed[track_id] = Routed(at, track, TRACK_AGENCY[track].value, office)
    return routed


def _counts(data: Any) -> bool:
    """A record that can count: parsed data, and not a refusal."""
    return isinstance(data, Mapping) and data.get("outcome") != "denied"


def _days(at: datetime, routed: Routed | None) -> float | None:
    if routed is None:
        return None
    return max((at - routed.at).total_seconds(), 0.0) / 86400


def _track_fact(kind: Kind, record: Record, at: datetime, routed: dict[str, Routed]) -> Fact | None:
    data = record.data
    track_id = _text(data.get("track_id"))
    if track_id is None:
        return None
    joined = routed.get(track_id)
    track = _code(Track, data.get("track")) or (joined.track if joined else None)
    if track is None:
        return None
    outcome = None
    if kind is Kind.COMPLETED:
        outcome = _code(Outcome, data.get("track_outcome"))
        if outcome is None:
            return None
    return Fact(
        kind,
        key=track_id,
        at=at,
        track=track,
        agency=TRACK_AGENCY[track].value,
        office=joined.office if joined is not None and joined.track == track else None,
        outcome=outcome,
        days=_days(at, joined) if kind in (Kind.ACCEPTED, Kind.COMPLETED) else None,
    )


_ZONE_B = {
    CASE_ACCEPTED: Kind.ACCEPTED,
    CASE_REJECTED: Kind.REJECTED,
    CASE_COMPLETED: Kind.COMPLETED,
}


def facts_of(record: Record, *, routed: dict[str, Routed]) -> list[Fact]:
    """The facts one audit record stands for (none for records that do not count)."""
    at = parse_time(record.time)
    data = record.data
    if at is None or not _counts(data):
        return []
    if record.type == CLIENT_CREATED:
        client_ref = _text(data.get("resource_id"))
        return [Fact(Kind.CLIENT, key=client_ref, at=at)] if client_ref else []
    if record.type == REFERRAL_CREATED:
        ids = data.get("track_ids")
        found = (
            [(t, routed.get(t)) for t in ids if isinstance(t, str)] if isinstance(ids, list) else []
        )
        return [
            Fact(Kind.REFERRED, key=t, at=at, track=r.track, agency=r.agency, office=r.office)
            for t, r in found
            if r is not None
        ]
    if record.type in _ZONE_B:
        fact = _track_fact(_ZONE_B[record.type], record, at, routed)
        return [fact] if fact is not None else []
    if record.type == CONSENT_WITHDRAWN:
        consent_id = _text(data.get("consent_id")) or _text(data.get("resource_id"))
        agency = _code(Agency, data.get("recipient"))
        if consent_id is None:
            return []
        track = AGENCY_TRACK.get(agency) if agency is not None else None
        return [
            Fact(
                Kind.WITHDRAWN,
                key=consent_id,
                at=at,
                agency=agency.value if agency else None,
                track=track,
            )
        ]
    return []


def collect(
    records: Sequence[Record], *, start: datetime | None, end: datetime | None
) -> list[Fact]:
    """The period's facts, each (kind, key) once: at its first record among `records` (a
    redelivered or repeated record counts nowhere; one first seen before the period, not in it).
    """
    # Nothing after the period counts, not even a referral's routing.
    records = [
        r for r in records if (at := parse_time(r.time)) is not None and (end is None or at < end)
    ]
    routed = routing(records)
    first: dict[tuple[Kind, str], Fact] = {}
    for record in records:
        for fact in facts_of(record, routed=routed):
            known = first.get((fact.kind, fact.key))
            if known is None or fact.at < known.at:
                first[(fact.kind, fact.key)] = fact
    return sorted(
        (f for f in first.values() if in_period(f.at, start=start, end=end)),
        key=lambda f: f.at,
    )


# ---------------------------------------------------------------- grouping


def dimensioned(kind: Kind, by: By | None) -> bool:
    """Whether facts of `kind` have a value for the grouping (else they are in the total only)."""
    match by:
        case None | By.MONTH:
            return True
        case By.AGENCY | By.TRACK:
            return kind is not Kind.CLIENT
        case By.OFFICE:
            return kind in TRACK_KINDS
        case By.OUTCOME:
            return kind is Kind.COMPLETED


def group_of(fact: Fact, by: By | None) -> str | None:
    """The row a fact falls in; None when the grouping does not apply to its kind."""
    if not dimensioned(fact.kind, by):
        return None
    match by:
        case None:
            return ALL
        case By.MONTH:
            return fact.at.strftime("%Y-%m")
        case By.AGENCY:
            return fact.agency or UNKNOWN
        case By.OFFICE:
            # Agency and office: office names repeat across agencies (both have a "brussels").
            return f"{fact.agency or UNKNOWN}/{fact.office or UNKNOWN}"
        case By.TRACK:
            return fact.track.value if fact.track else UNKNOWN
        case By.OUTCOME:
            return fact.outcome.value if fact.outcome else UNKNOWN


def _part_fits(cell: str, group: str, by: By | None) -> bool:
    """A breakdown part that can hold facts in this row (the others are structural zeros)."""
    if cell.startswith("referrals.") and cell in REFERRAL_PARTS:
        track = cell.removeprefix("referrals.")
        agency = TRACK_AGENCY[Track(track)].value
        match by:
            case By.TRACK:
                return group == track
            case By.AGENCY:
                return group == agency
            case By.OFFICE:
                return group.startswith(f"{agency}/")
    if cell in COMPLETED_PARTS and by is By.OUTCOME and group != UNKNOWN:
        category = cell.removeprefix("completed.")
        return OUTCOME_CATEGORY[Outcome(group)].value == category
    return True


def _kind_of(cell: str) -> Kind:
    return Kind(cell.split(".", 1)[0])


def median_days(facts: Iterable[Fact]) -> float | None:
    """The median of the facts' days, in days to one decimal; None from fewer than THRESHOLD."""
    days = [f.days for f in facts if f.days is not None]
    if len(days) < THRESHOLD:
        return None
    return round(statistics.median(days), 1)


# ---------------------------------------------------------------- suppression

# (row group, or None for the total row; cell name)
Cell = tuple[str | None, str]
# A total and the parts that add up to it.
Relation = tuple[Cell, Sequence[Cell]]


def suppress(
    values: Mapping[Cell, int], relations: Iterable[Relation], *, threshold: int = THRESHOLD
) -> frozenset[Cell]:
    """The cells to withhold: every count below `threshold`, and enough others (see the module
    docstring) that no withheld cell can be worked out by adding or subtracting shown ones."""
    relations = list(relations)
    hidden = {cell for cell, value in values.items() if value < threshold}
    changed = True
    while changed:
        changed = False
        for total, parts in relations:
            withheld = [p for p in parts if p in hidden]
            if total in hidden:
                # The sum of the shown parts is the total: one withheld part must go with it.
                if withheld:
                    continue
            elif not withheld or (
                # A shown total gives away the sum of the withheld parts: it must be no one
                # cell's, and no small number.
                len(withheld) >= 2 and sum(values[p] for p in withheld) >= threshold
            ):
                continue
            shown = [p for p in parts if p not in hidden]
            if shown:
                # The next smallest part: it costs the least information.
                hidden.add(min(shown, key=lambda p: values[p]))
            else:
                hidden.add(total)
            changed = True
    return frozenset(hidden)


def relations_of(cells: Mapping[Cell, int | None], groups: Sequence[str]) -> list[Relation]:
    """The additive relations between shown cells: breakdowns within each row, columns over rows."""
    relations: list[Relation] = []
    for group in [None, *groups]:
        for total, parts in (
            ("referrals.total", REFERRAL_PARTS),
            ("completed.total", COMPLETED_PARTS),
        ):
            present = [(group, p) for p in parts if cells.get((group, p)) is not None]
            if cells.get((group, total)) is not None and present:
                relations.append(((group, total), present))
    for name in CELLS:
        present = [(g, name) for g in groups if cells.get((g, name)) is not None]
        if present:
            relations.append(((None, name), present))
    return relations


# ---------------------------------------------------------------- the table


def tabulate(facts: Sequence[Fact], *, by: By | None) -> dict[str, Any]:
    """Rows (one per group, or one `all` row without `by`) and the total, suppressed.

    Counts are `int` or `SUPPRESSED`; a figure the grouping does not apply to is None in the
    rows (e.g. clients reached by agency: a client is registered before any agency is chosen).
    """
    by_group: dict[str | None, list[Fact]] = {None: list(facts)}
    for fact in facts:
        group = group_of(fact, by) if by is not None else None
        if group is not None:
            by_group.setdefault(group, []).append(fact)
    groups = sorted(g for g in by_group if g is not None)

    cells: dict[Cell, int | None] = {}
    for group, members in by_group.items():
        counts: dict[str, int] = {}
        for fact in members:
            counts[fact.cell()] = counts.get(fact.cell(), 0) + 1
        for name in CELLS:
            kind = _kind_of(name)
            if name.endswith(".total"):
                count = sum(n for c, n in counts.items() if c.startswith(f"{kind.value}."))
            else:
                count = counts.get(name, 0)
            applies = group is None or (
                dimensioned(kind, by) and (count > 0 or _part_fits(name, group, by))
            )
            cells[(group, name)] = count if applies else None

    shown = {cell: value for cell, value in cells.items() if value is not None}
    hidden = suppress(shown, relations_of(cells, groups))

    def value(cell: Cell) -> int | str | None:
        count = cells[cell]
        return None if count is None else SUPPRESSED if cell in hidden else count

    def median(group: str | None, kind: Kind, count: str) -> float | None:
        # Only beside its count, shown: a median where the count is withheld would tell that the
        # count is 5 or more, and so narrow down the cells withheld with it.
        if cells[(group, count)] is None or (group, count) in hidden:
            return None
        return median_days(f for f in by_group[group] if f.kind is kind)

    def row(group: str | None) -> dict[str, Any]:
        return {
            "group": group if group is not None else ALL,
            Kind.CLIENT.value: value((group, Kind.CLIENT.value)),
            "referrals": {
                name.removeprefix("referrals."): value((group, name))
                for name in (*REFERRAL_PARTS, "referrals.total")
            },
            Kind.ACCEPTED.value: value((group, Kind.ACCEPTED.value)),
            Kind.REJECTED.value: value((group, Kind.REJECTED.value)),
            "completed": {
                name.removeprefix("completed."): value((group, name))
                for name in (*COMPLETED_PARTS, "completed.total")
            },
            Kind.WITHDRAWN.value: value((group, Kind.WITHDRAWN.value)),
            "median_days_to_acceptance": median(group, Kind.ACCEPTED, Kind.ACCEPTED.value),
            "median_days_to_completion": median(group, Kind.COMPLETED, "completed.total"),
        }

    total = row(None)
    return {"rows": [row(g) for g in groups] if by is not None else [total], "total": total}
