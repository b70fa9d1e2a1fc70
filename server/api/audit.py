"""The audit trail: page through events, recompute the chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from core import schemas
from server import audit
from server.api.deps import Auditor, Db

router = APIRouter(tags=["audit"])


@router.get("/audit/events")
def list_events(
    db: Db,
    _: Auditor,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> schemas.AuditEventPage:
    """Events after ``after``, in order, each with the exact canonical text its hash covers."""
    with db.reading() as session:
        rows = audit.list_events(session, after=after, limit=limit)
    events = [audit.to_wire(row) for row in rows]
    return schemas.AuditEventPage(
        events=events, next=events[-1].seq if len(events) == limit else None
    )


@router.get("/audit/verify")
def verify_chain(db: Db, _: Auditor) -> schemas.ChainCheck:
    """Recompute the whole chain on the server and report the first broken event."""
    with db.reading() as session:
        return audit.check_chain(session)
