"""Audit use cases: append a record to the chain, read the log, verify the chain."""

from dataclasses import replace

from sqlmodel import Session

from twoline_audit import domain, repository
from twoline_audit.models import AuditEntry
from twoline_audit.repository import StoredEntry
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
        **fields, prev_hash=prev_hash, entry_hash=domain.entry_hash(prev_hash=prev_hash, **fields)
    )
    return repository.add_entry(session, entry=entry)


def list_entries(session: Session, *, start: int, limit: int) -> tuple[list[StoredEntry], int]:
    """A page of the log and its size; data that no longer parses is shown as None."""
    rows, size = repository.read_page(session, start=start, limit=limit)
    shown = [replace(r, data=None) if r.data is repository.UNREADABLE else r for r in rows]
    return shown, size


def verify(session: Session) -> domain.Verification:
    """Recompute the chain from the first entry to the head."""
    return domain.verify(repository.iter_chain(session))
