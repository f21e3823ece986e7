"""The hash chain without I/O: how an entry's hash is made and how a chain is checked.

entry_hash = SHA-256(prev_hash ‖ canonical JSON of {index, event_id, type, source, time, data}),
with prev_hash of the first entry = 64 zeros. Canonical JSON: keys sorted, no whitespace, UTF-8
(RFC 8785 for the values an audit record holds: strings, integers, booleans, null, lists, maps).

A chain shows any change to, or removal of, an entry before the head. Cutting entries off the
end, or rewriting the whole tail, needs a head hash kept elsewhere to be seen — which is what the
target design's signed, witnessed checkpoints are for.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

GENESIS = "0" * 64


class ChainEntry(Protocol):
    index: int
    event_id: str
    type: str
    source: str
    time: str
    data: dict[str, Any]
    prev_hash: str
    entry_hash: str


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_hash(
    *,
    prev_hash: str,
    index: int,
    event_id: str,
    type: str,
    source: str,
    time: str,
    data: dict[str, Any],
) -> str:
    """The hash that links an entry to the one before it."""
    body = {
        "index": index,
        "event_id": event_id,
        "type": type,
        "source": source,
        "time": time,
        "data": data,
    }
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(body)).hexdigest()


def recompute(entry: ChainEntry, *, prev_hash: str) -> str:
    return entry_hash(
        prev_hash=prev_hash,
        index=entry.index,
        event_id=entry.event_id,
        type=entry.type,
        source=entry.source,
        time=entry.time,
        data=entry.data,
    )


def _hash_matches(entry: ChainEntry, *, prev_hash: str) -> bool:
    try:
        return recompute(entry, prev_hash=prev_hash) == entry.entry_hash
    except (TypeError, ValueError):  # data that is no longer JSON (see repository.UNREADABLE)
        return False


@dataclass
class Verification:
    ok: bool
    size: int
    head_hash: str | None
    first_bad_index: int | None


def verify(entries: Iterable[ChainEntry]) -> Verification:
    """Walk the chain in index order; the first entry that does not fit is where it broke.

    An entry fits when its index is the next one (no gap: nothing removed), it names the previous
    entry's hash, and its own hash is what its content gives (nothing changed).
    """
    size = 0
    prev = GENESIS
    head: str | None = None
    bad: int | None = None
    for expected, entry in enumerate(entries):
        size += 1
        if bad is None:
            if entry.index != expected:
                bad = expected
            elif entry.prev_hash != prev or not _hash_matches(entry, prev_hash=prev):
                bad = entry.index
        prev = entry.entry_hash
        head = entry.entry_hash
    return Verification(ok=bad is None, size=size, head_hash=head, first_bad_index=bad)
