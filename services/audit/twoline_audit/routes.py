"""Audit routes (oversight): auditors read, verify and prove the log; nobody else reads it."""

import uuid
from datetime import UTC, datetime
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, Path, Query, Request

from twoline_audit import domain, service, signing, stats
from twoline_audit.models import (
    AuditEntriesPublic,
    AuditEntryPublic,
    ChainVerification,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    OutcomeStats,
    PublicKey,
    TracePublic,
)
from twoline_shared.auth import Auditor
from twoline_shared.db import SessionDep
from twoline_shared.fields import IsoDate
from twoline_shared.openapi import ProblemType, problems
from twoline_shared.pagination import MAX_LOG_PAGE, LogPageSize, Position, Size

router = APIRouter(prefix="/log", tags=["log"])

INVALID_RANGE = ProblemType(
    422, "invalid-range", "The request is not valid", "The range ends before it starts."
)
TREE_SIZE_TOO_LARGE = ProblemType(
    422,
    "tree-size-too-large",
    "The request is not valid",
    "The log does not hold that many entries yet.",
)


def get_signing_key(request: Request) -> Ed25519PrivateKey:
    return signing.load_signing_key(request.app.state.runtime.settings.signing_key_path)


SigningKey = Annotated[Ed25519PrivateKey, Depends(get_signing_key)]


@router.get("/entries", response_model=AuditEntriesPublic, responses=problems(INVALID_RANGE))
def list_entries(
    session: SessionDep,
    principal: Auditor,
    start: Annotated[Position, Query(description="The index of the first entry to return.")] = 0,
    end: Annotated[
        Size | None,
        Query(
            description="The index after the last entry to return (exclusive); the log's end "
            "if left out."
        ),
    ] = None,
    limit: Annotated[
        LogPageSize, Query(description=f"At most this many entries (1 to {MAX_LOG_PAGE}).")
    ] = 100,
):
    """Entries of the audit log from index `start` (to `end`, exclusive), in log order."""
    rows, count = service.list_entries(session, start=start, end=end, limit=limit)
    fields = AuditEntryPublic.model_fields
    data = [AuditEntryPublic.model_validate({k: vars(row)[k] for k in fields}) for row in rows]
    return AuditEntriesPublic(data=data, count=count)


@router.get("/verify", response_model=ChainVerification)
def verify_log(session: SessionDep, principal: Auditor):
    """Recompute the hash chain: is every entry unchanged and in place?"""
    result = service.verify(session)
    return ChainVerification.model_validate(vars(result))


@router.get("/checkpoint", response_model=Checkpoint)
def get_checkpoint(session: SessionDep, principal: Auditor, key: SigningKey):
    """A signed checkpoint of the Merkle tree: its size and root hash, now."""
    return service.checkpoint(session, key=key)


@router.get("/public-key", response_model=PublicKey)
def get_public_key(principal: Auditor, key: SigningKey):
    """The Ed25519 key that signs checkpoints, for verifiers to pin."""
    raw = signing.public_bytes(key)
    return PublicKey(
        key_id=signing.key_id(key),
        public_key=domain.b64(raw),
        pem=signing.public_pem(key),
    )


@router.get(
    "/proofs/inclusion/{entry_id}",
    response_model=InclusionProof,
    responses=problems(
        ProblemType(404, "entry-not-found", "Not found", "The tree holds no entry of that index."),
        TREE_SIZE_TOO_LARGE,
    ),
)
def get_inclusion_proof(
    session: SessionDep,
    principal: Auditor,
    entry_id: Annotated[Position, Path(description="The entry's index in the log.", examples=[0])],
    tree_size: Annotated[
        Size | None,
        Query(description="The size of the tree to prove the entry in; the whole log if left out."),
    ] = None,
):
    """The audit path that puts an entry in the tree of `tree_size` (default: the whole log)."""
    return service.inclusion_proof(session, index=entry_id, tree_size=tree_size)


@router.get(
    "/proofs/consistency",
    response_model=ConsistencyProof,
    responses=problems(INVALID_RANGE, TREE_SIZE_TOO_LARGE),
)
def get_consistency_proof(
    session: SessionDep,
    principal: Auditor,
    first: Annotated[Size, Query(description="The size of the earlier tree.", examples=[8])],
    second: Annotated[Size, Query(description="The size of the later tree.", examples=[13])],
):
    """The proof that the tree of size `second` is an extension of the tree of size `first`."""
    return service.consistency_proof(session, first=first, second=second)


# ---------------------------------------------------------------- flow traces

traces_router = APIRouter(prefix="/traces", tags=["traces"])


def get_trace_grace(request: Request) -> float:
    return request.app.state.runtime.settings.trace_grace_seconds


TraceGrace = Annotated[float, Depends(get_trace_grace)]


@traces_router.get(
    "/{referral_id}",
    response_model=TracePublic,
    responses=problems(
        ProblemType(
            404, "trace-not-found", "Not found", "The audit log holds nothing about that referral."
        )
    ),
)
def get_trace(
    session: SessionDep,
    principal: Auditor,
    referral_id: Annotated[
        uuid.UUID,
        Path(
            description="The referral's id, as the bridge's audit records name it.",
            examples=["8c4f2e1a-7b6d-4c3e-9f8a-2b1c0d9e8f7a"],
        ),
    ],
    grace: TraceGrace,
):
    """One referral's flow across every service, in log order, with what an auditor should see."""
    return service.trace(
        session, referral_id=referral_id, now=datetime.now(UTC), grace_seconds=grace
    )


# ---------------------------------------------------------------- outcome statistics

stats_router = APIRouter(prefix="/stats", tags=["stats"])


@stats_router.get(
    "",
    response_model=OutcomeStats,
    responses=problems(
        ProblemType(422, "invalid-period", "The request is not valid", "`from` is not before `to`.")
    ),
)
def get_outcome_stats(
    session: SessionDep,
    principal: Auditor,
    since: Annotated[
        IsoDate | None,
        Query(
            alias="from", description="The first day counted (inclusive, UTC); open if left out."
        ),
    ] = None,
    until: Annotated[
        IsoDate | None,
        Query(alias="to", description="The day counting stops (exclusive, UTC); open if left out."),
    ] = None,
    by: Annotated[
        stats.By | None,
        Query(
            description="Group the figures by agency, office, track, outcome or month; one "
            "row for all if left out."
        ),
    ] = None,
):
    """Outcome statistics from audit metadata: counts per group, cells below 5 suppressed."""
    return service.outcome_stats(session, since=since, until=until, by=by)
