"""The audit trail: the one module that appends events to the hash chain.

Every state change calls :func:`append` inside the same transaction as the change, so
both land or neither does. Writers are serialised (:func:`lock_chain`), which makes
``seq`` gapless without a database SEQUENCE (a SEQUENCE leaves holes on rollback).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from core.chain import ChainReport, seal, verify_chain
from core.schemas import AuditEvent as WireEvent
from core.schemas import ChainCheck
from server.models import AuditEvent, AuditHead, utcnow

__all__ = [
    "SYSTEM",
    "Actor",
    "Appended",
    "append",
    "check_chain",
    "document_events",
    "finish",
    "forget",
    "list_events",
    "lock_chain",
    "to_wire",
]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, as the trail will remember them even if records change later."""

    id: str  # "person:<id>", "agent:<token id>" or "system"
    name: str
    office: str | None = None
    role: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "office": self.office, "role": self.role}

    def acting_as(self, *, office: str | None, role: str | None) -> Actor:
        """The same actor, recorded with the office and role that authorised the act."""
        return Actor(self.id, self.name, office, role)


SYSTEM = Actor(id="system", name="Officium")


def lock_chain(session: Session) -> None:
    """Take the chain's write lock; called first by every writing transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update()).one()
    # On SQLite, BEGIN IMMEDIATE has already taken the database's writer lock.


@dataclass(frozen=True, slots=True)
class Appended:
    """The sequence number and hash an appended event received."""

    seq: int
    hash: str


_HEAD = "officium.audit_head"


def _head(session: Session) -> dict[str, Any]:
    """The chain head as this transaction sees it (read once, kept in the session)."""
    head = session.info.get(_HEAD)
    if head is None:
        row = session.execute(
            sa.select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)
        ).one_or_none()
        if row is None:
            raise RuntimeError("the audit chain has no head row: the database is not migrated")
        head = session.info[_HEAD] = {"seq": row.seq, "hash": row.hash, "moved": False}
    return head


def append(
    session: Session,
    *,
    actor: Actor,
    action: str,
    subject: dict[str, Any],
    details: dict[str, Any] | None = None,
    time: datetime | None = None,
) -> Appended:
    """Seal one event onto the chain, in the caller's transaction."""
    head = _head(session)
    moment = time or utcnow()
    sealed = seal(
        seq=head["seq"] + 1,
        time=moment,
        actor=actor.snapshot(),
        action=action,
        subject=subject,
        details=details or {},
        prev=head["hash"],
    )
    # A Core insert: events are never read back in the transaction that writes them.
    session.execute(
        sa.insert(AuditEvent.__table__).values(
            seq=sealed.body["seq"],
            time=moment,
            action=action,
            actor=actor.id,
            document_id=subject.get("document"),
            folder_id=subject.get("folder"),
            canonical=sealed.canonical,
            hash=sealed.hash,
        )
    )
    head.update(seq=sealed.body["seq"], hash=sealed.hash, moved=True)
    return Appended(sealed.body["seq"], sealed.hash)


def finish(session: Session) -> None:
    """Write the moved head back; called by the writing transaction just before commit."""
    head = session.info.pop(_HEAD, None)
    if head is not None and head["moved"]:
        session.execute(
            sa.update(AuditHead.__table__)
            .where(AuditHead.__table__.c.id == 1)
            .values(seq=head["seq"], hash=head["hash"])
        )


def forget(session: Session) -> None:
    """Drop the cached head (the transaction rolled back)."""
    session.info.pop(_HEAD, None)


def to_wire(row: AuditEvent) -> WireEvent:
    """The wire form of an event: its canonical text and the fields it holds."""
    text = bytes(row.canonical).decode("utf-8")
    body = json.loads(text)
    return WireEvent(
        seq=row.seq,
        hash=row.hash,
        canonical=text,
        time=body["time"],
        action=body["action"],
        actor=body["actor"],
        subject=body["subject"],
        details=body["details"],
        prev=body["prev"],
    )


def list_events(session: Session, *, after: int, limit: int) -> list[AuditEvent]:
    """Events with ``seq > after``, in order."""
    query = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(limit)
    return list(session.exec(query))


def document_events(session: Session, *, document_id: int) -> list[AuditEvent]:
    """Every event whose subject is one document, in order."""
    query = select(AuditEvent).where(AuditEvent.document_id == document_id).order_by(AuditEvent.seq)
    return list(session.exec(query))


def _stored_chain(session: Session, batch: int = 2000) -> Iterator[tuple[int, bytes, str]]:
    after = 0
    while True:
        rows = session.exec(
            select(AuditEvent.seq, AuditEvent.canonical, AuditEvent.hash)
            .where(AuditEvent.seq > after)
            .order_by(AuditEvent.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        for seq, data, digest in rows:
            yield seq, bytes(data), digest
        after = rows[-1][0]


def check_chain(session: Session) -> ChainCheck:
    """Recompute the whole stored chain and compare it with the head."""
    report: ChainReport = verify_chain(_stored_chain(session))
    head = session.get(AuditHead, 1)
    first_broken = report.first_broken.seq if report.first_broken else None
    reason = report.first_broken.reason if report.first_broken else None
    if (
        first_broken is None
        and head is not None
        and (head.seq, head.hash)
        != (
            report.head_seq,
            report.head_hash,
        )
    ):
        first_broken = min(head.seq, report.head_seq + 1)
        reason = "the chain ends before the recorded head: events at its tail are missing"
    return ChainCheck(
        ok=first_broken is None,
        checked=report.checked,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        first_broken_seq=first_broken,
        reason=reason,
    )
