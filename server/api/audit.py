"""The audit trail: page through events, recompute the chain, checkpoints, proofs, keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from core import schemas
from core.errors import NotFound
from server import audit, checkpoints, merkle
from server.api.deps import Admin, Auditor, Caller, Db, Now, Signer, get_settings
from server.settings import Settings

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


AppSettings = Annotated[Settings, Depends(get_settings)]
TreeSize = Annotated[int, Query(ge=0, le=2**62, description="A number of events.")]


@router.get("/audit/keys")
def audit_keys(db: Db, settings: AppSettings, _: Caller) -> schemas.AuditKeyList:
    """The log's origin and every key the server signed checkpoints with, and when."""
    with db.reading() as session:
        return checkpoints.published_keys(session, settings)


@router.post("/audit/keys/rotate")
def rotate_key(
    request: Request, db: Db, settings: AppSettings, signer: Signer, caller: Admin, now: Now
) -> schemas.KeyRotation:
    """Replace the server's signing key; old and new key both sign the checkpoint that says so."""
    rotation = checkpoints.rotate_key(
        db, signer, settings, now=now, actor=caller.acting(schemas.Role.admin)
    )
    request.app.state.signer = rotation.signer
    return schemas.KeyRotation(
        retired=rotation.retired,
        current=rotation.current,
        checkpoint=checkpoints.to_wire(rotation.checkpoint),
    )


@router.get("/audit/checkpoint")
def latest_checkpoint(db: Db, _: Caller) -> schemas.SignedCheckpoint:
    """The latest signed checkpoint: the Merkle root of the largest tree signed so far."""
    with db.reading() as session:
        row = checkpoints.latest(session)
    if row is None:
        raise NotFound(
            "no checkpoint has been signed yet: one is made every few minutes when there are "
            "new events, or now with 'POST /audit/checkpoints'"
        )
    return checkpoints.to_wire(row)


@router.post("/audit/checkpoints")
def make_checkpoint(
    db: Db, settings: AppSettings, signer: Signer, _: Auditor, now: Now
) -> schemas.SignedCheckpoint:
    """Sign a checkpoint of the trail as it stands now (the latest one if nothing moved)."""
    row = checkpoints.make_checkpoint(db, signer, settings, now=now)
    if row is None:
        raise NotFound("the audit trail is empty: there is nothing to checkpoint")
    return checkpoints.to_wire(row)


@router.get("/audit/checkpoints")
def list_checkpoints(
    db: Db,
    _: Caller,
    after_size: TreeSize = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.CheckpointPage:
    """Signed checkpoints of trees larger than ``after_size``, smallest first."""
    with db.reading() as session:
        rows = checkpoints.page(session, after_size=after_size, limit=limit)
    return schemas.CheckpointPage(
        checkpoints=[checkpoints.to_wire(row) for row in rows],
        next=rows[-1].tree_size if len(rows) == limit else None,
    )


@router.get("/audit/proofs/inclusion")
def inclusion_proof(
    db: Db,
    _: Auditor,
    seq: Annotated[int, Query(ge=1, le=2**62, description="The event's sequence number.")],
    tree_size: TreeSize,
) -> schemas.InclusionProof:
    """The RFC 9162 audit path of one event in the tree of the first ``tree_size`` events."""
    with db.reading() as session:
        return merkle.inclusion(session, seq=seq, tree_size=tree_size)


@router.get("/audit/proofs/consistency")
def consistency_proof(
    db: Db, _: Caller, old_size: TreeSize, new_size: TreeSize
) -> schemas.ConsistencyProof:
    """The RFC 9162 proof that the tree of ``old_size`` events is a prefix of ``new_size``'s."""
    with db.reading() as session:
        return merkle.consistency(session, old_size=old_size, new_size=new_size)
