"""The access log: who read which evidence, and when, without a chained write per read.

Downloads of version bytes, verify look-ups, audit exports and certificates are read
paths, some of them hot. An audit event per read would put each one behind the single
writer lock, so a read only appends an entry to an in-process buffer (O(1), no database
I/O) with :func:`record`. A flusher writes the buffer every ``access_flush_seconds``, or
as soon as it holds :data:`FLUSH_AT` entries: each batch lands in ONE writing
transaction that inserts its rows into ``access_log`` and appends ONE ``access.logged``
event carrying the batch's count, its first and last row ids and :func:`batch_digest`
of its rows; every row names that event (``sealed_by_seq``). The batch is thereby bound
into the hash chain: changing, adding or removing a row breaks its event's digest.

The price is stated plainly: entries still in the buffer when the process dies (a crash,
``kill -9``, power loss) are lost, at most one flush interval's worth. A clean shutdown
flushes. A buffer that cannot be written (the database is down) keeps its entries, up to
:data:`MAX_PENDING`; beyond that new entries are counted, not kept, and the next event
says how many were dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import sqlalchemy as sa
from sqlmodel import Session, select

from core import schemas
from core.bundle import access_digest
from core.chain import format_time
from server import audit
from server.auth import Principal
from server.db import Database
from server.models import AccessEntry

__all__ = [
    "ACTIONS",
    "FLUSH_AT",
    "MAX_PENDING",
    "AccessLog",
    "batch_digest",
    "list_entries",
    "record",
]

log = logging.getLogger("officium.server.access")

ACTIONS = frozenset({"content.download", "verify.lookup", "audit.export", "certificate.download"})
FLUSH_AT = 500  # entries that make the flusher write at once, and the most one batch holds
MAX_PENDING = 100_000  # entries kept while the database cannot be written
_MAX_DETAIL = 2000  # the detail column's width


@dataclass(frozen=True, slots=True)
class _Entry:
    at: datetime
    actor: str
    actor_name: str
    action: str
    document_id: int | None
    version_number: int | None
    detail: str | None


def batch_digest(rows: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of the canonical JSON (RFC 8785) list of a batch's rows, in id order.

    Each row is an object of exactly ``id, at, actor, actor_name, action, document_id,
    version_number, detail``, with ``at`` spelled as the audit chain spells times
    (``YYYY-MM-DDTHH:MM:SS.ffffffZ``); ``sealed_by_seq`` is not hashed (it names the event
    that holds the digest). The offline verifier computes the same (core.bundle).
    """
    return access_digest(
        {**row, "at": format_time(row["at"]) if isinstance(row["at"], datetime) else row["at"]}
        for row in rows
    )


class AccessLog:
    """The process's buffer of reads and the flusher that seals them into the trail."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime],
        every: float,
        flush_at: int = FLUSH_AT,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.db = db
        self.clock = clock
        self.every = every
        self.flush_at = flush_at
        self.max_pending = max_pending
        self._pending: deque[_Entry] = deque()
        self._dropped = 0
        self._lock = threading.Lock()  # guards the buffer; held for an append only
        self._flushing = threading.Lock()  # one flush at a time, so batches keep their order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def pending(self) -> int:
        """How many entries wait in the buffer."""
        return len(self._pending)

    def record(
        self,
        principal: Principal,
        action: str,
        *,
        document_id: int | None = None,
        version_number: int | None = None,
        detail: str | None = None,
    ) -> None:
        """Buffer one read by ``principal``; no database I/O."""
        if action not in ACTIONS:
            raise ValueError(f"'{action}' is not an access-log action ({sorted(ACTIONS)})")
        actor = principal.actor()
        entry = _Entry(
            at=self.clock(),
            actor=actor.id,
            actor_name=actor.name,
            action=action,
            document_id=document_id,
            version_number=version_number,
            detail=detail[:_MAX_DETAIL] if detail else None,
        )
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self._dropped += 1
                return
            self._pending.append(entry)
            full = len(self._pending) == self.flush_at
        if full:
            self._nudge()

    def _nudge(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        # A closed loop means shutdown: its final flush takes the entries.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    def flush(self) -> int:
        """Write every buffered entry now, one sealed batch per transaction; say how many."""
        written = 0
        with self._flushing:
            while True:
                with self._lock:
                    size = min(self.flush_at, len(self._pending))
                    batch = [self._pending.popleft() for _ in range(size)]
                    dropped, self._dropped = self._dropped, 0
                if not batch and not dropped:
                    return written
                try:
                    self._write(batch, dropped)
                except BaseException:
                    # Keep the entries, in order, for the next flush.
                    with self._lock:
                        self._pending.extendleft(reversed(batch))
                        self._dropped += dropped
                    raise
                written += len(batch)

    def _write(self, batch: list[_Entry], dropped: int) -> None:
        with self.db.writing() as session:
            # Writers are serialised (the chain's lock), so the next ids are ours to take.
            first = session.execute(sa.select(sa.func.max(AccessEntry.id))).scalar_one() or 0
            rows = [
                {
                    "id": first + 1 + index,
                    "at": entry.at,
                    "actor": entry.actor,
                    "actor_name": entry.actor_name,
                    "action": entry.action,
                    "document_id": entry.document_id,
                    "version_number": entry.version_number,
                    "detail": entry.detail,
                }
                for index, entry in enumerate(batch)
            ]
            sealed = audit.append(
                session,
                actor=audit.SYSTEM,
                action="access.logged",
                subject={},
                details={
                    "count": len(rows),
                    "first_id": rows[0]["id"] if rows else None,
                    "last_id": rows[-1]["id"] if rows else None,
                    "sha256": batch_digest(rows),
                    "dropped": dropped,
                },
                time=self.clock(),
            )
            if rows:
                session.execute(
                    sa.insert(AccessEntry.__table__),
                    [{**row, "sealed_by_seq": sealed.seq} for row in rows],
                )

    def start(self) -> None:
        """Flush on the running event loop every ``every`` seconds, or when the buffer fills."""
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="officium-access-flusher")

    async def _run(self) -> None:
        while True:
            with anyio.move_on_after(self.every):
                await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await anyio.to_thread.run_sync(self.flush)
            except Exception:
                log.exception("writing the access log failed; its entries stay buffered")

    async def stop(self) -> None:
        """Stop the flusher, then write what is left (called when the app shuts down)."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
        self._task = self._wake = self._loop = None
        try:
            await anyio.to_thread.run_sync(self.flush)
        except Exception:
            log.exception("the final access-log flush failed: %d entries are lost", self.pending)


def record(
    app: Any,
    principal: Principal,
    action: str,
    *,
    document_id: int | None = None,
    version_number: int | None = None,
    detail: str | None = None,
) -> None:
    """Buffer one read of evidence by ``principal`` (O(1), no database I/O).

    ``app`` is the application or its state (``request.app`` or ``request.app.state``);
    ``action`` is one of :data:`ACTIONS`. The entry reaches ``access_log`` with the
    next flush.
    """
    state = getattr(app, "state", app)
    state.access_log.record(
        principal,
        action,
        document_id=document_id,
        version_number=version_number,
        detail=detail,
    )


def list_entries(
    session: Session, *, document_id: int | None, after: int, limit: int
) -> schemas.AccessLogPage:
    """Written access-log entries with ``id > after``, oldest first, optionally of one document."""
    query = select(AccessEntry).where(AccessEntry.id > after)
    if document_id is not None:
        query = query.where(AccessEntry.document_id == document_id)
    rows = session.exec(query.order_by(AccessEntry.id).limit(limit)).all()
    entries = [
        schemas.AccessRecord(
            id=row.id,
            at=row.at,
            actor=row.actor,
            actor_name=row.actor_name,
            action=row.action,
            document_id=row.document_id,
            version_number=row.version_number,
            detail=row.detail,
            sealed_by_seq=row.sealed_by_seq,
        )
        for row in rows
    ]
    following = entries[-1].id if len(rows) == limit else None
    return schemas.AccessLogPage(entries=entries, next=following)
