"""All audit-log queries. The log is only appended to; nothing here updates or deletes an
entry (the tree-node cache beside it is derived, and a stale node is replaced)."""

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, select

from twoline_audit.models import AuditEntry, AuditEntryRef, AuditTreeNode

# Stands in for stored data that no longer parses as JSON: it matches no hash (and is shown as
# null), so a damaged row is reported by `verify` instead of failing the request.
UNREADABLE = object()


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored, read without trusting that its data still parses."""

    index: int
    event_id: str
    type: str
    source: str
    time: str
    data: Any
    prev_hash: str
    entry_hash: str
    leaf_hash: str


# Any constant: the lock only orders the appends of this service's own database.
_APPEND_LOCK = 0x7A0D17


def hold_the_head(session: Session) -> None:
    """Hold the log's head until commit, so replicas append one after the other instead of
    computing the same next index and failing on it (Postgres: a transaction advisory lock;
    SQLite: the database's write lock, taken by a write that changes nothing)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
    else:
        session.execute(sa.text('UPDATE audit_entry SET "index" = "index" WHERE 0 = 1'))


def last_entry(session: Session) -> AuditEntry | None:
    return session.exec(
        select(AuditEntry).order_by(AuditEntry.index.desc()).limit(1)  # type: ignore[attr-defined]
    ).first()


def add_entry(session: Session, *, entry: AuditEntry) -> AuditEntry:
    session.add(entry)
    session.flush()
    return entry


def _parse(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else UNREADABLE
    except ValueError:
        return UNREADABLE


def _stored(row: Any) -> StoredEntry:
    return StoredEntry(
        index=row[0],
        event_id=row[1],
        type=row[2],
        source=row[3],
        time=row[4],
        data=_parse(row[5]),
        prev_hash=row[6],
        entry_hash=row[7],
        leaf_hash=row[8],
    )


_COLUMNS = (
    AuditEntry.index,
    AuditEntry.event_id,
    AuditEntry.type,
    AuditEntry.source,
    AuditEntry.time,
    # CAST, not the JSON type: a row whose data was damaged must not fail the whole read.
    sa.cast(AuditEntry.data, sa.Text),
    AuditEntry.prev_hash,
    AuditEntry.entry_hash,
    AuditEntry.leaf_hash,
)


def read_entries(session: Session, *, start: int | None, limit: int) -> list[StoredEntry]:
    """Entries with index >= start (all if None), in index order; data is parsed here."""
    query = select(*_COLUMNS)
    if start is not None:
        query = query.where(AuditEntry.index >= start)
    rows = session.exec(query.order_by(AuditEntry.index).limit(limit)).all()  # type: ignore[arg-type]
    return [_stored(row) for row in rows]


def read_page(
    session: Session, *, start: int, limit: int, end: int | None = None
) -> tuple[list[StoredEntry], int]:
    """A page from index `start` (up to `end`, exclusive) and the log's size, in one statement."""
    size = select(func.count()).select_from(AuditEntry).correlate(None)
    query = select(*_COLUMNS, size.scalar_subquery()).where(AuditEntry.index >= start)
    if end is not None:
        query = query.where(AuditEntry.index < end)
    rows = session.exec(
        query.order_by(AuditEntry.index).limit(limit)  # type: ignore[arg-type]
    ).all()
    if rows:
        return [_stored(row) for row in rows], rows[0][-1]
    return [], session.exec(size).one()


def iter_chain(session: Session, *, batch: int = 1000) -> Iterator[StoredEntry]:
    """Every entry in index order, fetched in batches so a long log is not held in memory."""
    # From the lowest stored index, whatever it is: a row moved below 0 must still be seen.
    start: int | None = None
    while True:
        rows = read_entries(session, start=start, limit=batch)
        yield from rows
        if len(rows) < batch:
            return
        start = rows[-1].index + 1


def log_size(session: Session) -> int:
    return session.exec(select(func.count()).select_from(AuditEntry)).one()


def perfect_hashes(session: Session) -> Callable[[int, int], bytes]:
    """Perfect-subtree hashes as stored (level 0: the entries' leaf hashes), each read once.

    A missing or damaged one is a hash that matches nothing, so proofs fail instead of the read.
    """
    known: dict[tuple[int, int], bytes] = {}

    def perfect(level: int, position: int) -> bytes:
        if (level, position) not in known:
            if level == 0:
                query = select(AuditEntry.leaf_hash).where(AuditEntry.index == position)
            else:
                query = select(AuditTreeNode.hash).where(
                    AuditTreeNode.level == level, AuditTreeNode.position == position
                )
            stored = session.exec(query).first()  # type: ignore[call-overload]
            known[(level, position)] = _unhex(stored) if stored is not None else b""
        return known[(level, position)]

    return perfect


def save_nodes(session: Session, *, nodes: Iterable[tuple[int, int, bytes]]) -> None:
    """Store the perfect subtrees an append completed (a re-append replaces a stale one)."""
    for level, position, hash_ in nodes:
        session.merge(AuditTreeNode(level=level, position=position, hash=hash_.hex()))
    session.flush()


def _unhex(text: str) -> bytes:
    # A damaged stored hash becomes one that matches nothing, so proofs fail instead of the read.
    try:
        return bytes.fromhex(text)
    except (TypeError, ValueError):
        return b""


# ---------------------------------------------------------------- flow traces


def add_refs(session: Session, *, index: int, refs: Iterable[tuple[str, str]]) -> None:
    """Index the ids entry `index` names, in the transaction that appends it."""
    for kind, value in sorted(refs):
        session.add(AuditEntryRef(index=index, kind=kind, value=value))
    session.flush()


def indexes_naming(session: Session, *, kind: str, values: Iterable[str]) -> set[int]:
    """The indexes of every entry that names one of `values` as a `kind` id."""
    wanted = sorted(set(values))
    found: set[int] = set()
    # In slices: a referral has a handful of ids, but a bound-parameter list must stay short.
    for start in range(0, len(wanted), 500):
        query = select(AuditEntryRef.index).where(
            AuditEntryRef.kind == kind,
            AuditEntryRef.value.in_(wanted[start : start + 500]),  # type: ignore[attr-defined]
        )
        found.update(session.exec(query).all())
    return found


def read_indexes(session: Session, *, indexes: Iterable[int]) -> list[StoredEntry]:
    """The entries at `indexes`, in index order; data is parsed here."""
    wanted = sorted(set(indexes))
    rows: list[Any] = []
    for start in range(0, len(wanted), 500):
        query = select(*_COLUMNS).where(
            AuditEntry.index.in_(wanted[start : start + 500])  # type: ignore[attr-defined]
        )
        rows += session.exec(query).all()  # type: ignore[call-overload]
    return sorted((_stored(row) for row in rows), key=lambda e: e.index)


# ---------------------------------------------------------------- outcome statistics


def stats_records(
    session: Session,
    *,
    types: Sequence[str],
    join_types: Sequence[str],
    since: str | None,
    until: str | None,
) -> list[tuple[str, str, Any]]:
    """(type, time, data) of the entries of `types` with since <= time < until, and of
    `join_types` with time < until, in log order; data is parsed here (UNREADABLE if not).

    `time` is compared as text: the bounds are ISO dates, and the caller widens them so that an
    entry time with any UTC offset is in, then filters exactly. There is no index on `type` or
    `time`: a full scan of the log, O(n) per request, fine at this scale; an index on (type,
    time) is the next step if it is not.
    """
    in_period = AuditEntry.type.in_(types)  # type: ignore[attr-defined]
    joined = AuditEntry.type.in_(join_types)  # type: ignore[attr-defined]
    if since is not None:
        in_period = in_period & (AuditEntry.time >= since)  # type: ignore[operator]
    if until is not None:
        in_period = in_period & (AuditEntry.time < until)  # type: ignore[operator]
        joined = joined & (AuditEntry.time < until)  # type: ignore[operator]
    query = (
        select(AuditEntry.type, AuditEntry.time, sa.cast(AuditEntry.data, sa.Text))
        .where(in_period | joined)
        .order_by(AuditEntry.index)  # type: ignore[arg-type]
    )
    return [(row[0], row[1], _parse(row[2])) for row in session.exec(query).all()]
