"""The audit service's log from outside it, over HTTP.

`twoline audit verify` fetches a signed checkpoint and every entry, then checks: the checkpoint's
Ed25519 signature (against a pinned key), that the entries are all there in order, that each
entry's content is included at its index (its RFC 9162 inclusion proof), that the recomputed root is the signed one,
that the hash chain holds, and that the checkpoint extends an earlier one (consistency proof).
The hashing and proof checks are `twoline_audit.domain`'s — one implementation for server and
verifier — so only HTTP and reporting live here.

`twoline audit trace` prints one referral's trace (`GET /v1/traces/{referral_id}`) as a timeline
of ids and codes, then its findings.
"""

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from twoline_audit import domain

PAGE = 1000


class LogError(Exception):
    """Verification failed; the message names the entry (index and event id) where it can."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass
class Report:
    checkpoint: dict[str, Any]
    public_key: bytes
    pinned: bool
    lines: list[str] = field(default_factory=list)


def read_public_key(path: Path) -> bytes:
    """A raw Ed25519 public key from a PEM file or a file holding its base64 (as served)."""
    text = path.read_text().strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} does not hold an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if text.startswith("{"):
        text = json.loads(text)["public_key"]
    raw = domain.unb64(text)
    if len(raw) != 32:
        raise ValueError(f"{path} does not hold a 32-byte Ed25519 public key")
    return raw


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params or None)
    if response.status_code != 200:
        raise LogError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def check_signature(checkpoint: dict[str, Any], public_key: bytes, *, what: str) -> bytes:
    """The checkpoint's root hash, once its signature is shown to be the pinned key's."""
    try:
        root = domain.unb64(checkpoint["root_hash"])
        signature = domain.unb64(checkpoint["signature"])
        body = domain.checkpoint_body(
            tree_size=int(checkpoint["tree_size"]),
            root_hash=root,
            timestamp=str(checkpoint["timestamp"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LogError(f"{what} is malformed ({exc})") from exc
    if checkpoint.get("key_id") != domain.key_id(public_key):
        raise LogError(f"{what} is signed by key {checkpoint.get('key_id')}, not the pinned key")
    if not domain.signature_valid(public_key=public_key, body=body, signature=signature):
        raise LogError(f"{what}'s signature does not verify: it was not signed by the log's key")
    return root


def fetch_entries(client: httpx.Client, size: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while len(entries) < size:
        start = len(entries)
        page = _get(client, "/v1/log/entries", start=start, end=size, limit=PAGE)["data"]
        if not page:
            break
        entries += page
        if len(page) < min(PAGE, size - start):
            break
    return entries


def _name(entry: dict[str, Any]) -> str:
    return f"entry {entry.get('index')} (event {entry.get('event_id')})"


def check_entries(
    client: httpx.Client, entries: list[dict[str, Any]], *, size: int, root: bytes
) -> list[str]:
    """Every entry present, in order, and included at its index in the signed tree."""
    for position, entry in enumerate(entries):
        if entry.get("index") != position:
            raise LogError(
                f"entry {position} is missing: the log jumps to {_name(entry)}", index=position
            )
    if len(entries) < size:
        raise LogError(
            f"entry {len(entries)} is missing: the checkpoint counts {size} entries, "
            f"the log holds {len(entries)} up to there",
            index=len(entries),
        )
    leaves: list[bytes] = []
    for entry in entries:
        leaf = domain.entry_leaf_hash(SimpleNamespace(**entry))  # type: ignore[arg-type]
        if leaf is None:
            raise LogError(f"{_name(entry)}: its data is unreadable", index=entry["index"])
        leaves.append(leaf)
    # The root recomputed from every entry's own content equals the signed one: every entry is
    # included, unchanged, at its index (O(n)). The server's inclusion proofs are checked for a
    # sample; only when the roots differ is every entry's proof asked for, to name the one.
    sample = sorted({0, size // 4, size // 2, (3 * size) // 4, size - 1} & set(range(size)))
    for index in sample:
        _check_included(client, entries[index], leaves[index], size=size, root=root)
    if domain.merkle_root(leaves) != root:
        for entry, leaf in zip(entries, leaves, strict=True):
            _check_included(client, entry, leaf, size=size, root=root)
        raise LogError("the entries do not give the checkpoint's root hash")
    chain = domain.verify(SimpleNamespace(**e) for e in entries)  # type: ignore[misc]
    if not chain.ok:
        bad = chain.first_bad_index
        raise LogError(f"the hash chain breaks at entry {bad}", index=bad)
    return [
        f"entries: {size} fetched, each included at its index (the root recomputed from them "
        f"is the signed one; the server's inclusion proofs of {len(sample)} verified)",
        "root: recomputed from the entries, equal to the signed root",
        "chain: every entry links to the one before it",
    ]


def _check_included(
    client: httpx.Client, entry: dict[str, Any], leaf: bytes, *, size: int, root: bytes
) -> None:
    """The server's inclusion proof puts this entry's own content at its index, or LogError."""
    proof = _get(client, f"/v1/log/proofs/inclusion/{entry['index']}", tree_size=size)
    path = [domain.unb64(h) for h in proof["audit_path"]]
    if not domain.verify_inclusion(
        leaf_index=entry["index"], tree_size=size, leaf=leaf, proof=path, root=root
    ):
        raise LogError(
            f"{_name(entry)} has been altered: its content is not the leaf that the signed "
            "checkpoint includes at its index",
            index=entry["index"],
        )


def check_consistency(
    client: httpx.Client, previous: dict[str, Any], current: dict[str, Any], *, public_key: bytes
) -> str:
    """The current checkpoint's tree extends the previous one's (RFC 9162 consistency)."""
    first_root = check_signature(previous, public_key, what="the previous checkpoint")
    second_root = domain.unb64(current["root_hash"])
    first, second = int(previous["tree_size"]), int(current["tree_size"])
    if first > second:
        raise LogError(f"the log shrank from {first} to {second} entries", index=second)
    if first == 0:
        return "consistency: the previous checkpoint was of the empty log"
    proof: list[bytes] = []
    if first < second:
        body = _get(client, "/v1/log/proofs/consistency", first=first, second=second)
        proof = [domain.unb64(h) for h in body["consistency_path"]]
    if not domain.verify_consistency(
        first=first, second=second, first_root=first_root, second_root=second_root, proof=proof
    ):
        raise LogError(
            f"the log of {second} entries is not an extension of the previous checkpoint's "
            f"{first}: an entry below {first} was changed or removed"
        )
    return f"consistency: size {first} -> {second} proven (the earlier entries are unchanged)"


def verify(
    client: httpx.Client,
    *,
    public_key: bytes | None = None,
    previous: dict[str, Any] | None = None,
) -> Report:
    """Run every check; raises LogError at the first that fails."""
    pinned = public_key is not None or previous is not None
    if public_key is None and previous is not None:
        public_key = domain.unb64(previous["public_key"])
    if public_key is None:
        public_key = domain.unb64(_get(client, "/v1/log/public-key")["public_key"])
    checkpoint = _get(client, "/v1/log/checkpoint")
    root = check_signature(checkpoint, public_key, what="the checkpoint")
    size = int(checkpoint["tree_size"])
    report = Report(checkpoint=checkpoint, public_key=public_key, pinned=pinned)
    report.lines.append(
        f"checkpoint: {size} entries, root {checkpoint['root_hash']}, {checkpoint['timestamp']}, "
        f"signature by key {checkpoint['key_id']} valid"
        + ("" if pinned else " (key taken from the server: pass --public-key to pin it)")
    )
    report.lines += check_entries(client, fetch_entries(client, size), size=size, root=root)
    if previous is not None:
        report.lines.append(
            check_consistency(client, previous["checkpoint"], checkpoint, public_key=public_key)
        )
    return report


def saved(report: Report) -> dict[str, Any]:
    """What `--save` writes and `--previous` reads: the checkpoint and the key it verified with."""
    return {"checkpoint": report.checkpoint, "public_key": domain.b64(report.public_key)}


def run(
    *,
    url: str,
    token: str,
    public_key_file: Path | None,
    previous_file: Path | None,
    save_file: Path | None,
    out: TextIO,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """The command: 0 when every check passes, 1 naming what failed."""
    try:
        public_key = read_public_key(public_key_file) if public_key_file else None
        previous = json.loads(previous_file.read_text()) if previous_file else None
    except (OSError, ValueError, KeyError) as exc:
        print(f"twoline audit verify: {exc}", file=out)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, transport=transport, timeout=30) as client:
            report = verify(client, public_key=public_key, previous=previous)
    except LogError as exc:
        print(f"FAILED: {exc}", file=out)
        return 1
    except httpx.HTTPError as exc:
        print(f"FAILED: cannot reach the audit service at {url} ({exc})", file=out)
        return 1
    for line in report.lines:
        print(line, file=out)
    if save_file is not None:
        save_file.write_text(json.dumps(saved(report), indent=2) + "\n")
        print(f"saved the checkpoint to {save_file}", file=out)
    print("OK: the audit log verifies", file=out)
    return 0


# ---------------------------------------------------------------- `twoline audit trace`

# The ids and codes a timeline line shows after who did what, in this order.
TRACE_CODES = (
    "track",
    "track_id",
    "consent_id",
    "status",
    "reason",
    "track_outcome",
    "purpose",
    "categories",
    "request_id",
    "key_id",
    "track_ids",
    "consent_ids",
    "linked_track_ids",
)


SECOND_LINE_ROLES = frozenset({"icam_coach", "return_counsellor"})


def _who(record: dict[str, Any]) -> tuple[str, list[str]]:
    """Who, as role/agency/office or role/org — never a name (F9) — or `system` for a service
    acting on an event; and the agency/office the record names when they are not the actor's
    (the bridge records the track's recipient there)."""
    roles = record.get("roles") or []
    scope = [record.get("agency"), record.get("office")]
    if set(roles) & SECOND_LINE_ROLES:
        return "/".join([*roles, *(s for s in scope if s)]), []
    who = "/".join([*roles, record["org"]] if roles and record.get("org") else roles) or "system"
    named = [f"{k}={v}" for k, v in zip(("agency", "office"), scope, strict=True) if v]
    return who, named


def trace_lines(trace: dict[str, Any]) -> list[str]:
    """The trace as a readable timeline, then its findings (or `no findings`)."""
    lines = [f"trace of referral {trace['referral_id']}: {trace['count']} records"]
    for record in trace["records"]:
        codes = []
        for name in TRACE_CODES:
            value = record.get(name)
            if isinstance(value, list):
                value = ",".join(value) if value else None
            if value:
                codes.append(f"{name}={value}")
        who, named = _who(record)
        codes = named + codes
        if record.get("outcome") == "denied":
            codes.insert(0, "DENIED")
        lines.append(
            f"{record['index']:>6}  {record['time']}  {record.get('service') or '?'}  "
            f"{record.get('action')} {record.get('resource_type')}  by {who}"
            + (f"  {' '.join(codes)}" if codes else "")
        )
    findings = trace["findings"]
    if not findings:
        lines.append("no findings")
        return lines
    lines.append(f"{len(findings)} finding{'' if len(findings) == 1 else 's'}:")
    for finding in findings:
        entries = ", ".join(str(i) for i in finding["indexes"])
        lines.append(f"  {finding['code']} (entries {entries}): {finding['text']}")
    return lines


def run_trace(
    *,
    url: str,
    token: str,
    referral_id: str,
    out: TextIO,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """The command: 0 for a trace without findings, 1 when it has findings (so that scripts
    can act on them), 2 when there is no trace to show (unknown referral, refused, unreachable)."""
    try:
        referral_id = str(uuid.UUID(referral_id))
    except ValueError:
        print(f"twoline audit trace: {referral_id!r} is not a referral id (a UUID)", file=out)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, transport=transport, timeout=30) as client:
            response = client.get(f"/v1/traces/{referral_id}")
    except httpx.HTTPError as exc:
        print(f"twoline audit trace: cannot reach the audit service at {url} ({exc})", file=out)
        return 2
    if response.status_code != 200:
        try:
            detail = response.json().get("detail") or response.text[:300]
        except ValueError:
            detail = response.text[:300]
        print(f"twoline audit trace: answered {response.status_code}: {detail}", file=out)
        return 2
    trace = response.json()
    for line in trace_lines(trace):
        print(line, file=out)
    return 1 if trace["findings"] else 0
