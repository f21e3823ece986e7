"""Audit routes (oversight): auditors read, verify and prove the log; nobody else reads it."""

import uuid
from datetime import UTC, date, datetime
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

router = APIRouter(prefix="/log", tags=["log"])


def get_signing_key(request: Request) -> Ed25519PrivateKey:
    return signing.load_signing_key(request.app.state.runtime.settings.signing_key_path)


SigningKey = Annotated[Ed25519PrivateKey, Depends(get_signing_key)]


@router.get("/entries", response_model=AuditEntriesPublic)
def list_entries(
    session: SessionDep,
    principal: Auditor,
    start: Annotated[int, Query(ge=0)] = 0,
    end: Annotated[int | None, Query(ge=1, description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
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


@router.get("/proofs/inclusion/{entry_id}", response_model=InclusionProof)
def get_inclusion_proof(
    session: SessionDep,
    principal: Auditor,
    entry_id: Annotated[int, Path(ge=0, description="the entry's log index")],
    tree_size: Annotated[int | None, Query(ge=1)] = None,
):
    """The audit path that puts an entry in the tree of `tree_size` (default: the whole log)."""
    return service.inclusion_proof(session, index=entry_id, tree_size=tree_size)


@router.get("/proofs/consistency", response_model=ConsistencyProof)
def get_consistency_proof(
    session: SessionDep,
    principal: Auditor,
    first: Annotated[int, Query(ge=1)],
    second: Annotated[int, Query(ge=1)],
):
    """The proof that the tree of size `second` is an extension of the tree of size `first`."""
    return service.consistency_proof(session, first=first, second=second)


# ---------------------------------------------------------------- flow traces

traces_router = APIRouter(prefix="/traces", tags=["traces"])


def get_trace_grace(request: Request) -> float:
    return request.app.state.runtime.settings.trace_grace_seconds


TraceGrace = Annotated[float, Depends(get_trace_grace)]


@traces_router.get("/{referral_id}", response_model=TracePublic)
def get_trace(session: SessionDep, principal: Auditor, referral_id: uuid.UUID, grace: TraceGrace):
    """One referral's flow across every service, in log order, with what an auditor should see."""
    return service.trace(
        session, referral_id=referral_id, now=datetime.now(UTC), grace_seconds=grace
    )


# ---------------------------------------------------------------- outcome statistics

stats_router = APIRouter(prefix="/stats", tags=["stats"])


@stats_router.get("", response_model=OutcomeStats)
def get_outcome_stats(
    session: SessionDep,
    principal: Auditor,
    since: Annotated[date | None, Query(alias="from", description="inclusive")] = None,
    until: Annotated[date | None, Query(alias="to", description="exclusive")] = None,
    by: Annotated[stats.By | None, Query()] = None,
):
    """Outcome statistics from audit metadata: counts per group, cells below 5 suppressed."""
    return service.outcome_stats(session, since=since, until=until, by=by)
