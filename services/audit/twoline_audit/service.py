"""Audit use cases: append a record, read the log, verify the chain, sign checkpoints, prove.

Each append stores the perfect subtrees its leaf completes (`audit_tree_node`), so a checkpoint
or a proof reads O(log n) stored hashes instead of rebuilding the tree from every leaf.
"""

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from twoline_audit import domain, repository, signing, stats, traces
from twoline_audit.models import (
    AuditEntry,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    OutcomeStats,
    TraceFinding,
    TracePublic,
    TraceRecord,
)
from twoline_audit.repository import StoredEntry
from twoline_shared.errors import Invalid, NotFound
from twoline_shared.events import Event


def append(session: Session, *, event: Event) -> AuditEntry:
    """Append one audit record after the current head, in the caller's transaction.

    The head is held from before it is read until commit (`hold_the_head`), so replicas append
    one after the other. Should two ever compute the same index, the unique index makes the
    second insert fail, its transaction rolls back, and the kernel's consumer redelivers that
    event, appended after the new head: only one replica wins each index, the chain stays linear.
    """
    repository.hold_the_head(session)
    last = repository.last_entry(session)
    index = last.index + 1 if last is not None else 0
    prev_hash = last.entry_hash if last is not None else domain.GENESIS
    fields = {
        "index": index,
        "event_id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time,
        "data": dict(event.data),
    }
    entry = AuditEntry(
        **fields,
        prev_hash=prev_hash,
        entry_hash=domain.entry_hash(prev_hash=prev_hash, **fields),
        leaf_hash=domain.leaf_hash(domain.entry_bytes(**fields)).hex(),
    )
    entry = repository.add_entry(session, entry=entry)
    # The Merkle tree's perfect subtrees this leaf completes (a cache beside the log).
    repository.save_nodes(
        session,
        nodes=domain.parents_completed(
            index, bytes.fromhex(entry.leaf_hash), repository.perfect_hashes(session)
        ),
    )
    # Flow traces: the ids it names, indexed in the same transaction (not hashed).
    repository.add_refs(session, index=index, refs=traces.entry_refs(fields["data"]))
    return entry


def list_entries(
    session: Session, *, start: int, limit: int, end: int | None = None
) -> tuple[list[StoredEntry], int]:
    """A page of the log and its size; data that no longer parses is shown as None."""
    if end is not None and end <= start:
        raise Invalid("`end` must be greater than `start`.", slug="invalid-range")
    rows, size = repository.read_page(session, start=start, limit=limit, end=end)
    shown = [replace(r, data=None) if r.data is repository.UNREADABLE else r for r in rows]
    return shown, size


def verify(session: Session) -> domain.Verification:
    """Recompute the chain from the first entry to the head."""
    return domain.verify(repository.iter_chain(session))


def checkpoint(session: Session, *, key: Ed25519PrivateKey) -> Checkpoint:
    """Sign the tree as it stands: its size, its root, now."""
    size, mth = _tree(session, size=None)
    root = domain.root_of(size, mth)
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = signing.sign(key, tree_size=size, root_hash=root, timestamp=timestamp)
    return Checkpoint(
        tree_size=size,
        root_hash=domain.b64(root),
        timestamp=timestamp,
        signature=domain.b64(signature),
        key_id=signing.key_id(key),
    )


def _tree(session: Session, *, size: int | None) -> tuple[int, domain.RangeHash]:
    """The tree of the first `size` entries (all if None) as a range hasher over the stored
    perfect subtrees (O(log n) reads per root); Invalid if the log is not that big yet."""
    held = repository.log_size(session)
    if size is not None and held < size:
        raise Invalid(f"The log has {held} entries, not {size}.", slug="tree-size-too-large")
    return (held if size is None else size), domain.range_hasher(repository.perfect_hashes(session))


def inclusion_proof(session: Session, *, index: int, tree_size: int | None) -> InclusionProof:
    """The audit path of entry `index` in the tree of `tree_size` (default: the whole log)."""
    size, mth = _tree(session, size=tree_size)
    if index >= size:
        raise NotFound(f"No entry {index} in a tree of size {size}.", slug="entry-not-found")
    return InclusionProof(
        leaf_index=index,
        tree_size=size,
        leaf_hash=domain.b64(mth(index, index + 1)),
        audit_path=[domain.b64(h) for h in domain.path_of(index, size, mth)],
    )


def consistency_proof(session: Session, *, first: int, second: int) -> ConsistencyProof:
    """The proof that the tree of size `second` extends the tree of size `first`."""
    if first > second:
        raise Invalid("`first` must not be greater than `second`.", slug="invalid-range")
    size, mth = _tree(session, size=second)
    return ConsistencyProof(
        first=first,
        second=second,
        consistency_path=[domain.b64(h) for h in domain.consistency_of(first, size, mth)],
    )


def trace(
    session: Session, *, referral_id: uuid.UUID, now: datetime, grace_seconds: float
) -> TracePublic:
    """Every entry about one referral, from every service, in log order, and its findings.

    The entries naming the referral give its tracks and consents; then every entry naming one
    of those is added, whenever it arrived. Zone B's entries only ever name the track (F5).
    """
    rid = str(referral_id)
    direct = repository.read_indexes(
        session, indexes=repository.indexes_naming(session, kind=traces.REFERRAL, values=[rid])
    )
    if not direct:
        raise NotFound(f"The audit log holds nothing about referral {rid}.", slug="trace-not-found")
    tracks: set[str] = set()
    consents: set[str] = set()
    for entry in direct:
        own_tracks, own_consents = traces.own_ids(entry.data)
        tracks |= own_tracks
        consents |= own_consents
    related = repository.indexes_naming(
        session, kind=traces.TRACK, values=tracks
    ) | repository.indexes_naming(session, kind=traces.CONSENT, values=consents)
    known = {e.index for e in direct}
    more = [
        e
        for e in repository.read_indexes(session, indexes=related - known)
        if traces.belongs(e.data, referral_id=rid, tracks=tracks, consents=consents)
    ]
    entries = sorted([*direct, *more], key=lambda e: e.index)
    facts = [traces.fact(index=e.index, time=e.time, source=e.source, data=e.data) for e in entries]
    found = traces.findings(facts, referral_id=rid, now=now, grace=timedelta(seconds=grace_seconds))
    records = [_trace_record(e, f) for e, f in zip(entries, facts, strict=True)]
    return TracePublic(
        referral_id=rid,
        records=records,
        findings=[TraceFinding(code=f.code, indexes=f.indexes, text=f.text) for f in found],
        count=len(records),
    )


_TRACE_LISTS = ("roles", "categories", "track_ids", "consent_ids", "linked_track_ids")


def _trace_record(entry: StoredEntry, fact: traces.Fact) -> TraceRecord:
    """The ids and codes of one entry; a field of the wrong shape (a damaged row) is left out."""
    codes = {
        name: fact.get(name)
        for name in TraceRecord.model_fields
        if name not in ("index", "time", "type", "service", "track_id", *_TRACE_LISTS)
    }
    lists = {name: fact.list(name) for name in _TRACE_LISTS if name in fact.data}
    return TraceRecord(
        index=entry.index,
        time=entry.time,
        type=entry.type,
        service=fact.service,
        track_id=fact.track_id,
        **codes,
        **lists,
    )


# ---------------------------------------------------------------- outcome statistics


def outcome_stats(
    session: Session, *, since: date | None, until: date | None, by: stats.By | None
) -> OutcomeStats:
    """Outcome figures for [since, until) by group, small cells suppressed (`twoline_audit.stats`).

    Reads every counted record in the period, and the referral records before it (for the
    routing time of tracks accepted or completed in it): O(n) in the log's size per request.
    """
    if since is not None and until is not None and since >= until:
        raise Invalid("`from` must be before `to`.", slug="invalid-period")
    low, high = stats.text_bounds(since=since, until=until)
    records = [
        stats.Record(type=type_, time=time, data=data)
        for type_, time, data in repository.stats_records(
            session,
            types=stats.PERIOD_TYPES,
            join_types=stats.JOIN_TYPES,
            since=low,
            until=high,
        )
    ]
    facts = stats.collect(records, start=stats.day_start(since), end=stats.day_start(until))
    table = stats.tabulate(facts, by=by)
    return OutcomeStats.model_validate(
        {
            "from": since,
            "to": until,
            "by": by.value if by is not None else None,
            "suppressed_below": stats.THRESHOLD,
            **table,
        }
    )
