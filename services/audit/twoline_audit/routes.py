"""Audit routes (oversight): auditors read and verify the log; nobody else reads it."""

from typing import Annotated

from fastapi import APIRouter, Query

from twoline_audit import service
from twoline_audit.models import AuditEntriesPublic, AuditEntryPublic, ChainVerification
from twoline_shared.auth import Auditor
from twoline_shared.db import SessionDep

router = APIRouter(prefix="/log", tags=["log"])


@router.get("/entries", response_model=AuditEntriesPublic)
def list_entries(
    session: SessionDep,
    principal: Auditor,
    start: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    """Entries of the audit log from index `start`, in chain order."""
    rows, count = service.list_entries(session, start=start, limit=limit)
    data = [AuditEntryPublic.model_validate(vars(row)) for row in rows]
    return AuditEntriesPublic(data=data, count=count)


@router.get("/verify", response_model=ChainVerification)
def verify_log(session: SessionDep, principal: Auditor):
    """Recompute the hash chain: is every entry unchanged and in place?"""
    result = service.verify(session)
    return ChainVerification.model_validate(vars(result))
