"""Exports of the audit trail: the bundle (core.bundle) and a CSV sheet, both streamed.

Both read the events in keyset batches by ``seq`` and hold one batch at a time, so a
million events need the memory of :data:`BATCH` of them. Every export is pinned to one
signed checkpoint (``tree_size``): it holds events ``1..tree_size`` (or those of them
the filters select) and reads everything else in one snapshot transaction, so rows
written while the stream runs do not leak into it.

Scope. A full export holds every event. Filters narrow it and combine: ``document``
(one document's events), ``office`` (the events of every document the office has
ever owned: its current documents and those any ``document.owner_changed`` event moved
to or from it), ``since``/``until`` (event time, ``since <= time < until``). The
``version`` and ``decision`` records are those of the ``version.recorded`` and
``review.decided`` events the export holds, so they always match its events.

The ``end`` record's ``records`` counts the non-event records before it (manifest to
the last decision); ``events`` counts the event lines.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlmodel import Session

from core import merkle as rfc9162
from core.bundle import FORMAT, VERSION, event_line, record_line
from core.chain import format_time
from core.errors import Invalid, NotFound
from server import checkpoints, merkle
from server.content import ContentStore
from server.db import Database
from server.models import (
    AccessEntry,
    Checkpoint,
    Decision,
    Document,
    Office,
    UTCDateTime,
    Version,
)
from server.settings import Settings

__all__ = [
    "BATCH",
    "CONTENT_CHUNK",
    "CSV_COLUMNS",
    "Scope",
    "bundle_lines",
    "chunked",
    "csv_lines",
    "resolve_scope",
    "snapshot",
]

# Events read per query: large enough to amortise the round trip, small enough that a
# batch of canonical texts stays a few megabytes.
BATCH = 2000
# Raw bytes per content record: base64 makes it at most 1 MiB on the line.
CONTENT_CHUNK = 768 * 1024
# Documents an office filter names in SQL; beyond that the batch is filtered here.
_IN_LIMIT = 500
_HASH_CHUNK = 1024 * 1024

CSV_COLUMNS = (
    "seq",
    "time",
    "action",
    "actor_id",
    "actor_name",
    "actor_office",
    "document_id",
    "folder_id",
    "path",
    "version",
    "sha256",
    "details",
    "hash",
)

# A read-only view of the audit table: only server.audit writes it (see the architecture test).
_events = sa.table(
    "audit_event",
    sa.column("seq"),
    sa.column("time", UTCDateTime()),
    sa.column("action"),
    sa.column("document_id"),
    sa.column("canonical"),
    sa.column("hash"),
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which events an export holds: all of them, or those the filters select."""

    document: int | None = None
    office: str | None = None
    office_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def full(self) -> bool:
        return self.filters() == {}

    @property
    def complete_histories(self) -> bool:
        """Every event of each document in scope is present (no time range cuts them)."""
        return self.since is None and self.until is None

    def filters(self) -> dict[str, Any]:
        """The filters as the manifest records them (unset ones left out)."""
        found = {
            "document": self.document,
            "office": self.office,
            "since": format_time(self.since) if self.since else None,
            "until": format_time(self.until) if self.until else None,
        }
        return {name: value for name, value in found.items() if value is not None}


def resolve_scope(
    session: Session,
    *,
    document: int | None = None,
    office: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Scope:
    """Check the filters against the register; unknown names are NotFound, bad ranges Invalid."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise Invalid(f"'{name}' needs a time zone (for example 2024-05-01T00:00:00Z)")
    if since is not None and until is not None and since >= until:
        raise Invalid(
            f"'since' ({format_time(since)}) must be before 'until' ({format_time(until)})"
        )
    if document is not None and session.get(Document, document) is None:
        raise NotFound(f"there is no document with id {document}")
    office_id = None
    if office is not None:
        office_id = session.execute(
            sa.select(Office.id).where(Office.name == office)
        ).scalar_one_or_none()
        if office_id is None:
            raise NotFound(f"there is no office named '{office}'")
    return Scope(document=document, office=office, office_id=office_id, since=since, until=until)


@contextmanager
def snapshot(db: Database) -> Iterator[Session]:
    """One reading transaction that sees a single moment of the database throughout.

    SQLite's WAL keeps a read transaction on the snapshot of its first read; PostgreSQL
    needs REPEATABLE READ for that (READ COMMITTED would see each statement's present).
    """
    with db.reading() as session:
        if not db.is_sqlite:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


def chunked(lines: Iterable[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """Lines joined into chunks of about ``size`` bytes (one write per chunk, not per line).

    Closing this generator closes ``lines`` too, which ends its snapshot transaction.
    """
    pending: list[bytes] = []
    held = 0
    try:
        for line in lines:
            pending.append(line)
            held += len(line)
            if held >= size:
                yield b"".join(pending)
                pending, held = [], 0
        if pending:
            yield b"".join(pending)
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class _Selection:
    """A scope made concrete in one snapshot: the tree it is pinned to, its documents."""

    scope: Scope
    tree_size: int
    documents: frozenset[int] | None  # None: no document filter


def _select(session: Session, scope: Scope, tree_size: int) -> _Selection:
    documents = None
    if scope.document is not None:
        documents = frozenset((scope.document,))
    elif scope.office_id is not None:
        documents = frozenset(_office_documents(session, scope, tree_size))
    return _Selection(scope, tree_size, documents)


def _office_documents(session: Session, scope: Scope, tree_size: int) -> set[int]:
    """Documents the office owns now or owned at any time up to the tree."""
    found = set(
        session.execute(
            sa.select(Document.id).where(Document.owner_office_id == scope.office_id)
        ).scalars()
    )
    handovers = _Selection(Scope(), tree_size, None)
    for row in _scan(session, handovers, actions=("document.owner_changed",)):
        details = orjson.loads(row.canonical)["details"]
        if scope.office in (details.get("from"), details.get("to")):
            found.add(row.document_id)
    return found


def _scan(
    session: Session, selection: _Selection, *, actions: Sequence[str] = ()
) -> Iterator[sa.Row]:
    """The selected events in ``seq`` order, read :data:`BATCH` at a time."""
    scope, documents = selection.scope, selection.documents
    conditions = [_events.c.seq <= selection.tree_size]
    if actions:
        conditions.append(_events.c.action.in_(actions))
    if scope.since is not None:
        conditions.append(_events.c.time >= scope.since)
    if scope.until is not None:
        conditions.append(_events.c.time < scope.until)
    in_python = documents is not None and len(documents) > _IN_LIMIT
    if documents is not None:
        conditions.append(
            _events.c.document_id.is_not(None)
            if in_python
            else _events.c.document_id.in_(sorted(documents))
        )
    query = sa.select(
        _events.c.seq,
        _events.c.action,
        _events.c.document_id,
        _events.c.canonical,
        _events.c.hash,
    ).where(*conditions)
    after = 0
    while True:
        rows = session.execute(
            query.where(_events.c.seq > after).order_by(_events.c.seq).limit(BATCH)
        ).all()
        if not rows:
            return
        for row in rows:
            if not in_python or row.document_id in documents:
                yield row
        after = rows[-1].seq


def _batches(rows: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _checkpoints(session: Session, *, below: int) -> Iterator[Checkpoint]:
    """Checkpoints with ``tree_size <= below``, ascending, a batch at a time."""
    after = -1
    while True:
        rows = session.execute(
            sa.select(Checkpoint)
            .where(Checkpoint.tree_size > after, Checkpoint.tree_size <= below)
            .order_by(Checkpoint.tree_size)
            .limit(BATCH)
        ).scalars()
        batch = list(rows)
        if not batch:
            return
        yield from batch
        after = batch[-1].tree_size


def _stored_sha256(store: ContentStore, sha256: str) -> str | None:
    """The SHA-256 of the bytes the store holds under ``sha256`` now, or None if missing."""
    try:
        with open(store.file_for(sha256), "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _access_records(session: Session, event: sa.Row) -> Iterator[dict[str, Any]]:
    """The access-log rows an ``access.logged`` event sealed, in id order (core.bundle)."""
    details = orjson.loads(event.canonical)["details"]
    if details.get("first_id") is None:  # a batch that only counted dropped entries
        return
    rows = session.execute(
        sa.select(AccessEntry)
        .where(AccessEntry.id.between(details["first_id"], details["last_id"]))
        .order_by(AccessEntry.id)
    ).scalars()
    for row in rows:
        yield {
            "record": "access",
            "id": row.id,
            "at": format_time(row.at),
            "actor": row.actor,
            "actor_name": row.actor_name,
            "action": row.action,
            "document_id": row.document_id,
            "version_number": row.version_number,
            "detail": row.detail,
            "sealed_by_seq": row.sealed_by_seq,
        }


def _content_records(store: ContentStore, version: sa.Row) -> Iterator[dict[str, Any]]:
    try:
        handle = store.path_for(version.sha256).open("rb")
    except FileNotFoundError:
        return
    with handle:
        offset = 0
        while chunk := handle.read(CONTENT_CHUNK):
            yield {
                "record": "content",
                "document": version.document_id,
                "number": version.number,
                "offset": offset,
                "data": base64.b64encode(chunk).decode("ascii"),
            }
            offset += len(chunk)


def _versions(session: Session, selection: _Selection) -> Iterator[sa.Row]:
    """The versions whose ``version.recorded`` events the selection holds, in event order.

    Rows of (document_id, number, sha256, size): plain columns, not ORM objects, since a
    full export lists every version of the register.
    """
    columns = (Version.document_id, Version.number, Version.sha256, Version.size)
    for batch in _batches(_scan(session, selection, actions=("version.recorded",))):
        keys = [
            (row.document_id, orjson.loads(row.canonical)["details"]["number"]) for row in batch
        ]
        rows = session.execute(
            sa.select(*columns).where(sa.tuple_(Version.document_id, Version.number).in_(keys))
        )
        found = {(row.document_id, row.number): row for row in rows}
        for key in keys:
            if key in found:
                yield found[key]


def _decisions(session: Session, selection: _Selection) -> Iterator[dict[str, Any]]:
    """Decision records for the ``review.decided`` events the selection holds, in order."""
    for batch in _batches(_scan(session, selection, actions=("review.decided",))):
        events = [orjson.loads(row.canonical) for row in batch]
        ids = [event["subject"]["decision"] for event in events]
        rows = session.execute(sa.select(Decision).where(Decision.id.in_(ids))).scalars()
        found = {decision.id: decision for decision in rows}
        for event in events:
            decision = found.get(event["subject"]["decision"])
            if decision is None:
                continue
            yield {
                "record": "decision",
                "id": decision.id,
                "review": decision.review_id,
                "document": event["subject"]["document"],
                "payload": bytes(decision.payload).decode("utf-8"),
                "signature": decision.signature,
                "kid": event["details"].get("kid"),
                "client_signature": decision.client_signature,
            }


# ------------------------------------------------------------------- bundle


class _InclusionProofs:
    """Inclusion proofs in one tree for events in ascending order.

    Neighbouring events share most of their audit paths, so one ``subtree`` callback
    (and its cache) serves every event of one Merkle block: a range of a million events
    then reads each block's leaves once, not once per event. A new block starts a fresh
    cache, so memory stays that of one block.
    """

    def __init__(self, session: Session, tree_size: int) -> None:
        self.session = session
        self.tree_size = tree_size
        self.block = -1
        self.subtree = merkle.subtree(session)

    def inclusion(self, seq: int) -> list[bytes]:
        block = (seq - 1) // merkle.BLOCK
        if block != self.block:
            self.block, self.subtree = block, merkle.subtree(self.session)
        return rfc9162.inclusion_proof(seq - 1, self.tree_size, self.subtree)


def bundle_lines(
    db: Database,
    store: ContentStore,
    settings: Settings,
    *,
    checkpoint: Checkpoint,
    scope: Scope,
    now: datetime,
    with_content: bool = False,
) -> Iterator[bytes]:
    """The bundle's lines (core.bundle), pinned to ``checkpoint``, for ``scope``."""
    records = events = 0
    with snapshot(db) as session:
        selection = _select(session, scope, checkpoint.tree_size)
        for item in _bundle_body(session, store, settings, selection, now, with_content):
            if isinstance(item, bytes):
                events += 1
                yield item
            else:
                records += 1
                yield record_line(item)
    yield record_line({"record": "end", "events": events, "records": records})


def _bundle_body(
    session: Session,
    store: ContentStore,
    settings: Settings,
    selection: _Selection,
    now: datetime,
    with_content: bool,
) -> Iterator[dict[str, Any] | bytes]:
    """Every record before the end one, in order: dicts, and event lines as bytes."""
    scope, tree_size = selection.scope, selection.tree_size
    yield {
        "record": "manifest",
        "format": FORMAT,
        "version": VERSION,
        "origin": checkpoints.origin(session, settings),
        "created_at": format_time(now),
        "tree_size": tree_size,
        "scope": "full" if scope.full else "filtered",
        "filters": scope.filters(),
        "complete_histories": scope.complete_histories,
    }
    for key in checkpoints.server_keys(session, settings):
        yield {"record": "key", **key.model_dump(mode="json")}
    for row in _checkpoints(session, below=tree_size):
        yield {"record": "checkpoint", "note": row.note}
    # A full bundle lets the verifier recompute every root; a filtered one proves them.
    if not scope.full:
        for row in _checkpoints(session, below=tree_size - 1):
            proof = merkle.consistency_proof(session, row.tree_size, tree_size)
            yield {
                "record": "consistency",
                "old_size": row.tree_size,
                "new_size": tree_size,
                "proof": [node.hex() for node in proof],
            }
    proofs = _InclusionProofs(session, tree_size)
    for row in _scan(session, selection):
        yield event_line(bytes(row.canonical), row.hash)
        if scope.full and row.action == "access.logged":
            yield from _access_records(session, row)
        if not scope.full:
            path = proofs.inclusion(row.seq)
            yield {
                "record": "inclusion",
                "seq": row.seq,
                "tree_size": tree_size,
                "proof": [node.hex() for node in path],
            }
    for version in _versions(session, selection):
        yield {
            "record": "version",
            "document": version.document_id,
            "number": version.number,
            "sha256": version.sha256,
            "size": version.size,
            "stored_sha256": _stored_sha256(store, version.sha256),
        }
        if with_content:
            yield from _content_records(store, version)
    yield from _decisions(session, selection)


# ---------------------------------------------------------------------- CSV


def _csv_row(seq: int, canonical: bytes, digest: str) -> list[Any]:
    body = orjson.loads(canonical)
    actor, subject, details = body["actor"], body["subject"], body["details"]
    path = details.get("path", details.get("to"))
    version = subject.get("version", details.get("number", details.get("version")))
    sha256 = details.get("sha256")
    return [
        seq,
        body["time"],
        body["action"],
        _cell(actor.get("id")),
        _cell(actor.get("name")),
        _cell(actor.get("office")),
        subject.get("document"),
        subject.get("folder"),
        _cell(path) if isinstance(path, str) else None,
        version if isinstance(version, int) else None,
        sha256 if isinstance(sha256, str) else None,
        orjson.dumps(details).decode("utf-8"),
        digest,
    ]


def _cell(text: str | None) -> str | None:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (OWASP CSV advice)."""
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def csv_lines(db: Database, *, tree_size: int, scope: Scope) -> Iterator[bytes]:
    """The selected events as CSV (UTF-8, a header line first), one batch per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode("utf-8")
    with snapshot(db) as session:
        selection = _select(session, scope, tree_size)
        for batch in _batches(_scan(session, selection)):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(_csv_row(row.seq, bytes(row.canonical), row.hash) for row in batch)
            yield buffer.getvalue().encode("utf-8")
