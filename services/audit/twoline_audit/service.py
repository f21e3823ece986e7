"""Audit use cases: append a record, read the log, verify the chain, sign checkpoints, prove.

Proofs and checkpoints rebuild the tree from every stored leaf hash on each request: O(n) in
the log's size, fine at this scale; caching completed subtrees (tiles) is the way to scale it.
"""

from dataclasses import replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from twoline_audit import domain, repository, signing
from twoline_audit.models import AuditEntry, Checkpoint, ConsistencyProof, InclusionProof
from twoline_audit.repository import StoredEntry
from twoline_shared.errors import Invalid, NotFound
from twoline_shared.events import Event


def append(session: Session, *, event: Event) -> AuditEntry:
    """Append one audit record after the current head, in the caller's transaction.

    The head is read in the same transaction that inserts the next index. Two replicas appending
    at once compute the same index; the unique index makes the second insert fail, its
    transaction rolls back, and the kernel's consumer redelivers that event, which is then
    appended after the new head. Only one replica wins each index, so the chain stays linear.
    """
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
    return repository.add_entry(session, entry=entry)


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
    leaves = repository.leaf_hashes(session)
    root = domain.merkle_root(leaves)
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = signing.sign(key, tree_size=len(leaves), root_hash=root, timestamp=timestamp)
    return Checkpoint(
        tree_size=len(leaves),
        root_hash=domain.b64(root),
        timestamp=timestamp,
        signature=domain.b64(signature),
        key_id=signing.key_id(key),
    )


def _tree(session: Session, *, size: int | None) -> list[bytes]:
    """The first `size` leaves (all if None); Invalid if the log is not that big yet."""
    leaves = repository.leaf_hashes(session, size=size)
    if size is not None and len(leaves) < size:
        raise Invalid(f"The log has {len(leaves)} entries, not {size}.", slug="tree-size-too-large")
    return leaves


def inclusion_proof(session: Session, *, index: int, tree_size: int | None) -> InclusionProof:
    """The audit path of entry `index` in the tree of `tree_size` (default: the whole log)."""
    leaves = _tree(session, size=tree_size)
    if index >= len(leaves):
        raise NotFound(f"No entry {index} in a tree of size {len(leaves)}.", slug="entry-not-found")
    return InclusionProof(
        leaf_index=index,
        tree_size=len(leaves),
        leaf_hash=domain.b64(leaves[index]),
        audit_path=[domain.b64(h) for h in domain.inclusion_path(index, leaves)],
    )


def consistency_proof(session: Session, *, first: int, second: int) -> ConsistencyProof:
    """The proof that the tree of size `second` extends the tree of size `first`."""
    if first > second:
        raise Invalid("`first` must not be greater than `second`.", slug="invalid-range")
    leaves = _tree(session, size=second)
    return ConsistencyProof(
        first=first,
        second=second,
        consistency_path=[domain.b64(h) for h in domain.consistency_proof(first, leaves)],
    )
