"""The log without I/O: the hash chain, the RFC 9162 Merkle tree and its proofs, checkpoints.

entry_hash = SHA-256(prev_hash ‖ canonical JSON of {index, event_id, type, source, time, data}),
with prev_hash of the first entry = 64 zeros. Canonical JSON: keys sorted, no whitespace, UTF-8
(RFC 8785 for the values an audit record holds: strings, integers, booleans, null, lists, maps).

A chain shows any change to, or removal of, an entry before the head. Cutting entries off the
end, or rewriting the whole tail, needs a head hash kept elsewhere to be seen — which is what the
target design's signed, witnessed checkpoints are for.
"""

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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


# ---------------------------------------------------------------- the Merkle tree (RFC 9162)
#
# The same log, as an append-only Merkle tree over the entries (RFC 6962 / RFC 9162 §2.1):
# leaf hash SHA-256(0x00 ‖ entry bytes), node hash SHA-256(0x01 ‖ left ‖ right), leaf index =
# the entry's log index. A leaf hash is computed once, when the entry is appended, and stored;
# the tree is built from the stored leaf hashes, so an entry changed later no longer gives its
# leaf (its inclusion proof fails) and a rewritten leaf changes every later root (a consistency
# proof from a checkpoint kept elsewhere fails). These functions are the only implementation:
# the service builds proofs with them and `twoline audit verify` checks them with them.

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
CHECKPOINT_ORIGIN = "twoline-audit"


def entry_bytes(
    *, index: int, event_id: str, type: str, source: str, time: str, data: dict[str, Any]
) -> bytes:
    """The bytes a leaf commits to: canonical JSON of the entry as it was appended."""
    return canonical(
        {
            "index": index,
            "event_id": event_id,
            "type": type,
            "source": source,
            "time": time,
            "data": data,
        }
    )


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def entry_leaf_hash(entry: ChainEntry) -> bytes | None:
    """The leaf an entry's content gives; None when its data is no longer JSON."""
    try:
        return leaf_hash(
            entry_bytes(
                index=entry.index,
                event_id=entry.event_id,
                type=entry.type,
                source=entry.source,
                time=entry.time,
                data=entry.data,
            )
        )
    except (TypeError, ValueError):
        return None


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


# MTH(D[lo:hi]) of a range of the log. Every range RFC 9162's recursion asks for starts at a
# multiple of the largest power of two below its size, so it splits into perfect subtrees:
# a store of those (`perfect`) answers any root or proof with O(log n) lookups.
RangeHash = Callable[[int, int], bytes]
# (level, position) -> the hash of the perfect subtree of 2**level leaves at position.
PerfectHash = Callable[[int, int], bytes]


def range_hasher(perfect: PerfectHash) -> RangeHash:
    """MTH(D[lo:hi]) from perfect-subtree hashes (level 0: the leaves)."""

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return perfect(n.bit_length() - 1, lo // n)
        k = _split(n)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth


def leaves_hasher(leaves: Sequence[bytes]) -> RangeHash:
    """MTH over a list of leaf hashes held in memory (each perfect subtree computed once)."""
    known: dict[tuple[int, int], bytes] = {}

    def perfect(level: int, position: int) -> bytes:
        if level == 0:
            return leaves[position]
        if (level, position) not in known:
            known[(level, position)] = node_hash(
                perfect(level - 1, 2 * position), perfect(level - 1, 2 * position + 1)
            )
        return known[(level, position)]

    return range_hasher(perfect)


def parents_completed(index: int, leaf: bytes, left: PerfectHash) -> list[tuple[int, int, bytes]]:
    """The perfect subtrees that appending leaf `index` completes: (level, position, hash).

    `left(level, position)` gives the left sibling at each level (stored before this leaf)."""
    completed = []
    level, position, hash_ = 0, index, leaf
    while position & 1:
        hash_ = node_hash(left(level, position - 1), hash_)
        level, position = level + 1, position >> 1
        completed.append((level, position, hash_))
    return completed


def root_of(size: int, mth: RangeHash) -> bytes:
    """MTH(D[size]); the empty tree's root is SHA-256 of nothing."""
    return mth(0, size) if size else hashlib.sha256(b"").digest()


def path_of(index: int, size: int, mth: RangeHash) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index` in the tree of `size`, from the leaf up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")

    def path(lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if index < lo + k:
            return [*path(lo, lo + k), mth(lo + k, hi)]
        return [*path(lo + k, hi), mth(lo, lo + k)]

    return path(0, size)


def consistency_of(first: int, size: int, mth: RangeHash) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n: the nodes that tie the size-m tree to the size-n tree."""
    if not 0 < first <= size:
        raise ValueError(f"no consistency proof from size {first} to size {size}")

    def subproof(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        if m == hi - lo:
            return [] if complete else [mth(lo, hi)]
        k = _split(hi - lo)
        if m <= k:
            return [*subproof(m, lo, lo + k, complete), mth(lo + k, hi)]
        return [*subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]

    return subproof(first, 0, size, True)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes; the empty tree's root is SHA-256 of nothing."""
    return root_of(len(leaves), leaves_hasher(leaves))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index`, from the leaf up."""
    return path_of(index, len(leaves), leaves_hasher(leaves))


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n: the nodes that tie the size-m tree to the size-n tree."""
    return consistency_of(first, len(leaves), leaves_hasher(leaves))


def verify_inclusion(
    *, leaf_index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` put `leaf` at `leaf_index` of the tree with `root`?"""
    if not 0 <= leaf_index < tree_size:
        return False
    fn, sn = leaf_index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    *, first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (second, second_root) an extension of (first, first_root)?"""
    if not 0 < first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first tree is the proof's first node
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


# ---------------------------------------------------------------- signed checkpoints


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict standard base64; ValueError on anything else."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc


def checkpoint_body(*, tree_size: int, root_hash: bytes, timestamp: str) -> bytes:
    """The exact bytes a checkpoint's Ed25519 signature covers."""
    return f"{CHECKPOINT_ORIGIN}\n{tree_size}\n{b64(root_hash)}\n{timestamp}\n".encode()


def key_id(public_key: bytes) -> str:
    """A short name for a raw Ed25519 public key: hex of the first 8 bytes of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def signature_valid(*, public_key: bytes, body: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, body)
    except (InvalidSignature, ValueError):
        return False
    return True
