"""Safe retries of creating requests: the `Idempotency-Key` request header.

A partner system whose response was lost sends the same request again with the same key and
gets the same result — the same status, the same `Location`, the resource as it is now — never
a second record (draft-ietf-httpapi-idempotency-key-header). A key is remembered per tenant (the
caller's org, or agency and office) for `KEY_LIFETIME`, with a fingerprint of the request
(method, path, body). The same key with another request is a `422 idempotency-key-reused`.
Two identical requests at once: both may do the work, only one can store the key, the other's
transaction is rolled back and it answers as a replay.

Only a hash of the key is stored, since a caller may put anything in it (F8), and a replay
re-reads the resource instead of keeping a copy of the first response: no second copy of
personal data, and what a withdrawal erased stays erased (F4).
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request, Response
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel

from twoline_shared.auth import CurrentPrincipal, Principal
from twoline_shared.db import UtcDateTime, utcnow
from twoline_shared.errors import Invalid

KEY_LIFETIME = timedelta(hours=24)
REPLAYED_HEADER = "Idempotent-Replayed"

T = TypeVar("T")


class IdempotencyRecord(SQLModel, table=True):
    """A creating request done under an `Idempotency-Key`: what it created, to answer a retry."""

    __tablename__ = "idempotency_key"

    # Whose key it is: `org:<org>`, or `office:<agency>/<office>` in the second line.
    scope: str = Field(primary_key=True, max_length=220)
    # SHA-256 of the key, hex: the key itself is never stored.
    key_hash: str = Field(primary_key=True, max_length=64)
    # SHA-256 of method, path and the canonical body of the request that used the key first.
    fingerprint: str = Field(max_length=64)
    status_code: int
    # The created resource's id, which the route re-reads on a replay.
    resource_id: str = Field(max_length=255)
    location: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        description=(
            "Makes a retry of this request safe: send a fresh unique value (e.g. a UUID) with a "
            "creating request and the very same value when you send that request again. A "
            "retry within 24 hours answers like the first request (same status and Location, "
            f"header `{REPLAYED_HEADER}: true`) and creates nothing more. The same key with a "
            "different request is refused with 422 `idempotency-key-reused`. Visible ASCII, "
            "1 to 255 characters; only its hash is stored."
        ),
        examples=["5f0c7d3e-2b9a-4c61-9d3f-8a1e6b2c4d10"],
    ),
]


@dataclass(frozen=True)
class Idempotency:
    """The `Idempotency-Key` of one request (None without the header), its tenant and what it
    asked."""

    key: str | None
    scope: str
    fingerprint: str

    @property
    def key_hash(self) -> str:
        return hashlib.sha256((self.key or "").encode()).hexdigest()


def tenant(principal: Principal) -> str:
    """The scope a key is unique in: one NGO, or one second-line office of one agency."""
    if principal.org:
        return f"org:{principal.org}"
    if principal.agency:
        return f"office:{principal.agency}/{principal.office or ''}"
    return f"sub:{principal.sub}"


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What a request asked: its method, path and body (JSON compared by value, not by bytes)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


async def get_idempotency(
    request: Request, principal: CurrentPrincipal, key: IdempotencyKeyHeader = None
) -> Idempotency:
    body = await request.body() if key is not None else b""
    return Idempotency(
        key=key,
        scope=tenant(principal),
        fingerprint=fingerprint(request.method, request.url.path, body),
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]


def respond_once(
    idempotency: Idempotency,
    session: Session,
    response: Response,
    *,
    act: Callable[[], tuple[T, str]],
    replay: Callable[[str], T],
    location: Callable[[str], str] | None = None,
    status_code: int = 201,
) -> T:
    """Run `act` once per key: it returns the view and the id of the resource it created or
    changed. A retry with the same key answers `replay(resource_id)` with the first status and
    `Location` (the resource as it is now).

    `location(resource_id)` is a created resource's path, sent as `Location` on every answer.
    """
    if idempotency.key is None:
        view, resource_id = act()
        _answer(response, status_code, location(resource_id) if location else None)
        return view
    done = _lookup(session, idempotency)
    if done is not None:
        return _replay(done, response, replay)
    view, resource_id = act()
    path = location(resource_id) if location else None
    record = IdempotencyRecord(
        scope=idempotency.scope,
        key_hash=idempotency.key_hash,
        fingerprint=idempotency.fingerprint,
        status_code=status_code,
        resource_id=resource_id,
        location=path,
    )
    try:
        # Last, so that only the key's row is contended: a concurrent twin waits here (Postgres)
        # or at its first write (SQLite) and then finds the key taken.
        session.add(record)
        session.flush()
    except IntegrityError:
        # The twin committed first: undo everything this request did, answer as its replay.
        session.rollback()
        done = _lookup(session, idempotency)
        if done is None:
            raise
        return _replay(done, response, replay)
    _forget_expired(session)
    _answer(response, status_code, path)
    return view


def _lookup(session: Session, idempotency: Idempotency) -> IdempotencyRecord | None:
    record = session.get(IdempotencyRecord, (idempotency.scope, idempotency.key_hash))
    if record is None:
        return None
    if record.created_at < utcnow() - KEY_LIFETIME:
        # Forgotten: the key may be used afresh.
        session.delete(record)
        session.flush()
        return None
    if record.fingerprint != idempotency.fingerprint:
        raise Invalid(
            "This Idempotency-Key was already used for a different request.",
            slug="idempotency-key-reused",
        )
    return record


def _replay(record: IdempotencyRecord, response: Response, replay: Callable[[str], T]) -> T:
    view = replay(record.resource_id)
    _answer(response, record.status_code, record.location)
    response.headers[REPLAYED_HEADER] = "true"
    return view


def _answer(response: Response, status_code: int, location: str | None) -> None:
    response.status_code = status_code
    if location is not None:
        response.headers["Location"] = location


def _forget_expired(session: Session) -> None:
    """Keys older than their lifetime are dropped as new ones are stored (no job to run)."""
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.created_at < utcnow() - KEY_LIFETIME  # type: ignore[arg-type]
        )
    )
