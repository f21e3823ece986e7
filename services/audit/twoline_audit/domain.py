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
from collections.abc import Iterable, Sequence
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


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes; the empty tree's root is SHA-256 of nothing."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index`, from the leaf up."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_path(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*inclusion_path(index - k, leaves[k:]), merkle_root(leaves[:k])]


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n: the nodes that tie the size-m tree to the size-n tree."""
    if not 0 < first <= len(leaves):
        raise ValueError(f"no consistency proof from size {first} to size {len(leaves)}")
    return _subproof(first, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [merkle_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), merkle_root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), merkle_root(leaves[:k])]


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
