"""Notifications: the audit trail as a stream, and signed webhooks that deliver it.

Both read the trail in ``seq`` order from the database (never from memory), so any
replica serves them and a client resumes from the last ``seq`` it saw without a gap.
Webhook delivery is at least once: an event is posted until the receiver answers
2xx, with exponential backoff, and no later event is posted before it. Delivery state
(the cursor, failures, the lease) is operational and updated in place; creating or
removing a webhook is a state change and appends an audit event.

Several replicas share the work: a dispatcher pass claims a webhook by taking a lease
on its row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's writer lock serialises
the claim), posts outside any transaction, and records each outcome in a short one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

import anyio
import httpx
import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlmodel import Session, select

from core.errors import Conflict, NotFound
from core.schemas import Id, Name
from server import audit
from server.audit import Actor
from server.db import Database
from server.directory import office_by_name
from server.documents import get_document
from server.folders import folder_by_name
from server.models import Document, Folder, Office, Webhook, WebhookDelivery
from server.settings import Settings

__all__ = [
    "DeliveryAttempt",
    "DeliveryPage",
    "Dispatcher",
    "Event",
    "EventFilter",
    "EventPage",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookFilters",
    "WebhookInfo",
    "WebhookList",
    "create_webhook",
    "deactivate_webhook",
    "deliver_due",
    "delivery_log",
    "head_seq",
    "list_webhooks",
    "matching_events",
    "resolve_filter",
    "retry_delay",
    "sign",
]

log = logging.getLogger("officium.notifications")

SIGNATURE_HEADER = "X-Officium-Signature"
SEQ_HEADER = "X-Officium-Event-Seq"
RETRY_CAP = timedelta(minutes=5)
POST_TIMEOUT_SECONDS = 10.0
# A pass holds a webhook this long at most before another replica may take it over;
# it gives the webhook back after half of it, so a slow receiver cannot outlive it.
LEASE = timedelta(seconds=60)
EVENTS_PER_PAGE = 500
_ERROR_LENGTH = 2000


# ------------------------------------------------------------------ wire models
# (Shaped like core.schemas; they move there when the SDK and CLI speak webhooks.)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _http_url(value: str) -> str:
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("the URL must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("a webhook URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    parts.port  # noqa: B018  (raises ValueError on a port that is not a number in range)
    return value


HttpUrl = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_http_url)]


class WebhookCreate(_Wire):
    """A receiver URL, and which events it wants (all of them when no filter is given)."""

    url: HttpUrl
    document: Id | None = None
    folder: Name | None = None
    office: Name | None = None


class WebhookFilters(_Wire):
    """Which events a webhook receives; every filter given must match."""

    document: int | None = None
    folder: str | None = None
    office: str | None = None


class WebhookInfo(_Wire):
    """A webhook and how far its delivery has got (never its secret)."""

    id: int
    url: str
    filters: WebhookFilters
    active: bool
    created_at: datetime
    deactivated_at: datetime | None
    delivered_seq: int
    failures: int
    next_attempt_at: datetime | None


class WebhookCreated(WebhookInfo):
    """A new webhook with its signing secret, which is shown only here."""

    secret: str


class WebhookList(_Wire):
    webhooks: list[WebhookInfo]


class DeliveryAttempt(_Wire):
    """One attempt to deliver one event: the receiver's status code or the error."""

    id: int
    seq: int
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    at: datetime
    next_attempt_at: datetime | None


class DeliveryPage(_Wire):
    deliveries: list[DeliveryAttempt]
    next: int | None


# ---------------------------------------------------------- events and filters


@dataclass(frozen=True, slots=True)
class Event:
    """One audit event as notifications carry it: its seq, hash, action and exact text."""

    seq: int
    hash: str
    action: str
    canonical: str


@dataclass(frozen=True, slots=True)
class EventPage:
    """Matching events of one scanned stretch of the trail; ``scanned`` is its last seq."""

    events: list[Event]
    scanned: int
    more: bool


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a subscriber wants; every filter set must match (none: everything).

    - ``document``: the event's subject is that document;
    - ``folder``: the event is about that folder or one of its documents;
    - ``office``: the event is about a document the office owns *now*, hands one
      over to another office, or names the office itself as its subject.
    """

    document_id: int | None = None
    folder_id: int | None = None
    office_id: int | None = None
    office_name: str | None = None

    @property
    def is_empty(self) -> bool:
        return self.document_id is None and self.folder_id is None and self.office_id is None


def resolve_filter(
    session: Session,
    *,
    document: int | None = None,
    folder: str | None = None,
    office: str | None = None,
) -> EventFilter:
    """The filter for these names, or ``NotFound`` for one that is not recorded."""
    document_id = get_document(session, document).id if document is not None else None
    folder_id = folder_by_name(session, folder).id if folder is not None else None
    office_row = office_by_name(session, office) if office is not None else None
    return EventFilter(
        document_id=document_id,
        folder_id=folder_id,
        office_id=office_row.id if office_row else None,
        office_name=office_row.name if office_row else None,
    )


_AUDIT_HEAD = sa.table("audit_head", sa.column("id"), sa.column("seq"))


def head_seq(session: Session) -> int:
    """The seq of the newest event of the trail (0 when it is empty)."""
    seq = session.execute(sa.select(_AUDIT_HEAD.c.seq).where(_AUDIT_HEAD.c.id == 1)).scalar()
    return seq or 0


def matching_events(
    session: Session, event_filter: EventFilter, *, after: int, limit: int = EVENTS_PER_PAGE
) -> EventPage:
    """Events after ``after`` that pass the filter, from one page of ``limit`` events."""
    rows = audit.list_events(session, after=after, limit=limit)
    if not rows:
        return EventPage(events=[], scanned=after, more=False)
    owned: set[int] = set()
    if event_filter.office_id is not None:
        about = {row.document_id for row in rows if row.document_id is not None}
        if about:
            owned = set(
                session.exec(
                    select(Document.id).where(
                        Document.id.in_(about),
                        Document.owner_office_id == event_filter.office_id,
                    )
                )
            )
    events = [
        Event(
            seq=row.seq,
            hash=row.hash,
            action=row.action,
            canonical=bytes(row.canonical).decode("utf-8"),
        )
        for row in rows
        if _matches(event_filter, row, owned)
    ]
    return EventPage(events=events, scanned=rows[-1].seq, more=len(rows) == limit)


def _matches(event_filter: EventFilter, row, owned: set[int]) -> bool:
    if event_filter.document_id is not None and row.document_id != event_filter.document_id:
        return False
    if event_filter.folder_id is not None and row.folder_id != event_filter.folder_id:
        return False
    if event_filter.office_id is None or row.document_id in owned:
        return True
    body = json.loads(bytes(row.canonical))
    if row.document_id is not None:
        return (
            row.action == "document.owner_changed"
            and body["details"].get("from") == event_filter.office_name
        )
    return body["subject"].get("office") == event_filter.office_id


# ----------------------------------------------------------------- the registry


def _filters_of(session: Session, row: Webhook) -> WebhookFilters:
    folder = session.get(Folder, row.folder_id) if row.folder_id else None
    office = session.get(Office, row.office_id) if row.office_id else None
    return WebhookFilters(
        document=row.document_id,
        folder=folder.name if folder else None,
        office=office.name if office else None,
    )


def _info(session: Session, row: Webhook) -> WebhookInfo:
    return WebhookInfo(
        id=row.id,
        url=row.url,
        filters=_filters_of(session, row),
        active=row.active,
        created_at=row.created_at,
        deactivated_at=row.deactivated_at,
        delivered_seq=row.delivered_seq,
        failures=row.failures,
        next_attempt_at=row.next_attempt_at,
    )


def _destination(url: str) -> dict[str, str]:
    # The trail is exported to auditors and never rewritten, and a receiver's URL is
    # often a credential itself (chat services put the key in the path): keep only
    # its origin in clear, and a hash that proves which URL it was.
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    return {"origin": origin, "url_sha256": hashlib.sha256(url.encode("utf-8")).hexdigest()}


def create_webhook(
    session: Session, *, actor: Actor, request: WebhookCreate, now: datetime
) -> WebhookCreated:
    """Register a receiver; it gets the events recorded from now on, signed with a new secret."""
    event_filter = resolve_filter(
        session, document=request.document, folder=request.folder, office=request.office
    )
    row = Webhook(
        url=request.url,
        secret="whsec_" + secrets.token_urlsafe(32),
        document_id=event_filter.document_id,
        folder_id=event_filter.folder_id,
        office_id=event_filter.office_id,
        created_at=now,
        delivered_seq=0,
    )
    session.add(row)
    session.flush()
    filters = _filters_of(session, row)
    created = audit.append(
        session,
        actor=actor,
        action="webhook.created",
        subject={"webhook": row.id},
        details={**_destination(row.url), "filters": filters.model_dump()},
        time=now,
    )
    # Its own creation is the last event it does not receive.
    row.delivered_seq = created.seq
    session.add(row)
    return WebhookCreated(**_info(session, row).model_dump(), secret=row.secret)


def list_webhooks(session: Session) -> WebhookList:
    """Every webhook, active or not, without secrets."""
    rows = session.exec(select(Webhook).order_by(Webhook.id)).all()
    return WebhookList(webhooks=[_info(session, row) for row in rows])


def _webhook(session: Session, webhook_id: int) -> Webhook:
    row = session.get(Webhook, webhook_id)
    if row is None:
        raise NotFound(f"there is no webhook with id {webhook_id}")
    return row


def deactivate_webhook(
    session: Session, *, actor: Actor, webhook_id: int, now: datetime
) -> WebhookInfo:
    """Stop delivering to a webhook; its delivery log stays."""
    row = _webhook(session, webhook_id)
    if not row.active:
        raise Conflict(f"webhook {webhook_id} was already removed")
    row.active = False
    row.deactivated_at = now
    row.next_attempt_at = None
    session.add(row)
    audit.append(
        session,
        actor=actor,
        action="webhook.removed",
        subject={"webhook": row.id},
        details={"delivered_seq": row.delivered_seq},
        time=now,
    )
    return _info(session, row)


def delivery_log(session: Session, *, webhook_id: int, after: int, limit: int) -> DeliveryPage:
    """A webhook's delivery attempts after log entry ``after``, oldest first."""
    _webhook(session, webhook_id)
    rows = session.exec(
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.id > after)
        .order_by(WebhookDelivery.id)
        .limit(limit)
    ).all()
    attempts = [
        DeliveryAttempt(
            id=row.id,
            seq=row.seq,
            attempt=row.attempt,
            ok=row.ok,
            status_code=row.status_code,
            error=row.error,
            at=row.at,
            next_attempt_at=row.next_attempt_at,
        )
        for row in rows
    ]
    return DeliveryPage(
        deliveries=attempts, next=attempts[-1].id if len(attempts) == limit else None
    )


# --------------------------------------------------------------------- delivery


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def retry_delay(settings: Settings, failures: int) -> timedelta:
    """How long to wait after the ``failures``-th failed attempt in a row."""
    base = settings.webhook_retry_base_seconds
    exponent = min(failures - 1, 32)  # far past the cap; keeps the float finite
    return min(timedelta(seconds=base * 2**exponent), RETRY_CAP)


def delivery_body(event: Event) -> bytes:
    """What a webhook receives: the event's seq, hash and parsed canonical body."""
    payload = {"seq": event.seq, "hash": event.hash, "event": json.loads(event.canonical)}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class _Claim:
    webhook_id: int
    url: str
    secret: str
    event_filter: EventFilter
    delivered_seq: int
    failures: int
    owner: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    status_code: int | None
    error: str | None


def _due(now: datetime) -> list:
    return [
        Webhook.active == sa.true(),
        sa.or_(Webhook.next_attempt_at.is_(None), Webhook.next_attempt_at <= now),
        sa.or_(Webhook.lease_until.is_(None), Webhook.lease_until <= now),
    ]


def _candidates(db: Database, now: datetime) -> list[int]:
    """Due webhooks with events after their cursor (read only: idle passes write nothing)."""
    with db.reading() as session:
        rows = session.exec(
            select(Webhook.id, Webhook.delivered_seq).where(*_due(now)).order_by(Webhook.id)
        ).all()
        return [
            webhook_id
            for webhook_id, delivered in rows
            if audit.list_events(session, after=delivered, limit=1)
        ]


def _claim(db: Database, webhook_id: int, *, owner: str, now: datetime) -> _Claim | None:
    with db.writing() as session:
        query = select(Webhook).where(Webhook.id == webhook_id, *_due(now))
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        row = session.exec(query).one_or_none()
        if row is None:
            return None  # another replica took it, or it is no longer due
        row.lease_owner = owner
        row.lease_until = now + LEASE
        session.add(row)
        return _Claim(
            webhook_id=row.id,
            url=row.url,
            secret=row.secret,
            event_filter=EventFilter(
                document_id=row.document_id,
                folder_id=row.folder_id,
                office_id=row.office_id,
                office_name=session.get(Office, row.office_id).name if row.office_id else None,
            ),
            delivered_seq=row.delivered_seq,
            failures=row.failures,
            owner=owner,
        )


def _post(client: httpx.Client, claim: _Claim, event: Event) -> _Outcome:
    body = delivery_body(event)
    headers = {
        "Content-Type": "application/json",
        SEQ_HEADER: str(event.seq),
        SIGNATURE_HEADER: sign(claim.secret, body),
        "X-Officium-Webhook": str(claim.webhook_id),
    }
    try:
        # Streamed so that the receiver's answer is never read: only its status counts.
        with client.stream("POST", claim.url, content=body, headers=headers) as response:
            status = response.status_code
    except Exception as exc:  # whatever the receiver or the network does, it is logged
        return _Outcome(ok=False, status_code=None, error=f"{type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return _Outcome(ok=True, status_code=status, error=None)
    return _Outcome(ok=False, status_code=status, error=f"the receiver answered HTTP {status}")


def _record(
    db: Database,
    settings: Settings,
    claim: _Claim,
    *,
    seq: int,
    attempt: int,
    outcome: _Outcome,
    at: datetime,
) -> bool:
    """Log one attempt and move the webhook on; True if the pass may go on with it."""
    with db.writing() as session:
        row = session.get(Webhook, claim.webhook_id)
        retry_at = None if outcome.ok else at + retry_delay(settings, attempt)
        session.add(
            WebhookDelivery(
                webhook_id=claim.webhook_id,
                seq=seq,
                attempt=attempt,
                ok=outcome.ok,
                status_code=outcome.status_code,
                error=(outcome.error or "")[:_ERROR_LENGTH] or None,
                at=at,
                next_attempt_at=retry_at if row.active else None,
            )
        )
        if row.lease_owner != claim.owner:
            return False  # the lease ran out and another pass owns the webhook now
        going_on = outcome.ok and row.active
        if outcome.ok:
            row.delivered_seq = seq
            row.failures = 0
            row.next_attempt_at = None
            row.lease_until = at + LEASE
        else:
            row.delivered_seq = max(row.delivered_seq, seq - 1)
            row.failures = attempt
            row.next_attempt_at = retry_at if row.active else None
        if not going_on:
            row.lease_owner = row.lease_until = None
        session.add(row)
        return going_on


def _release(db: Database, claim: _Claim, *, scanned: int) -> None:
    with db.writing() as session:
        row = session.get(Webhook, claim.webhook_id)
        if row.lease_owner != claim.owner:
            return
        # Events up to ``scanned`` were delivered or did not match the filters.
        row.delivered_seq = max(row.delivered_seq, scanned)
        row.lease_owner = row.lease_until = None
        session.add(row)


def _serve(
    db: Database,
    settings: Settings,
    claim: _Claim,
    *,
    client: httpx.Client,
    clock: Callable[[], datetime],
    budget_ends: float,
    stopping: threading.Event,
) -> int:
    """Post a claimed webhook's pending events in order until one fails; the attempts made."""
    cursor, failures, attempts = claim.delivered_seq, claim.failures, 0
    while not stopping.is_set() and time.monotonic() < budget_ends:
        with db.reading() as session:
            page = matching_events(session, claim.event_filter, after=cursor)
        for event in page.events:
            if stopping.is_set() or time.monotonic() >= budget_ends:
                _release(db, claim, scanned=cursor)
                return attempts
            outcome = _post(client, claim, event)
            attempts += 1
            going_on = _record(
                db,
                settings,
                claim,
                seq=event.seq,
                attempt=failures + 1,
                outcome=outcome,
                at=clock(),
            )
            if not going_on:
                return attempts
            cursor, failures = event.seq, 0
        cursor = page.scanned
        if not page.more:
            break
    _release(db, claim, scanned=cursor)
    return attempts


def deliver_due(
    db: Database,
    settings: Settings,
    now: datetime,
    *,
    stopping: threading.Event | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """One dispatcher pass at time ``now``: post every due webhook's pending events.

    Returns how many delivery attempts were made. Blocking (it posts over HTTP): the
    server runs it in a worker thread; tests call it directly with a moved clock.
    """
    stopping = stopping or threading.Event()
    candidates = _candidates(db, now)
    if not candidates:
        return 0
    started = time.monotonic()

    def clock() -> datetime:  # ``now``, moved on by the time this pass has taken
        return now + timedelta(seconds=time.monotonic() - started)

    owner = uuid.uuid4().hex
    attempts = 0
    with httpx.Client(
        timeout=POST_TIMEOUT_SECONDS,
        transport=transport,
        trust_env=False,
        headers={"User-Agent": "Officium-Webhooks/1"},
    ) as client:
        for webhook_id in candidates:
            if stopping.is_set():
                break
            claim = _claim(db, webhook_id, owner=owner, now=clock())
            if claim is None:
                continue
            attempts += _serve(
                db,
                settings,
                claim,
                client=client,
                clock=clock,
                budget_ends=time.monotonic() + LEASE.total_seconds() / 2,
                stopping=stopping,
            )
    return attempts


class Dispatcher:
    """Runs :func:`deliver_due` in a worker thread about once a second, until stopped."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime],
        every: float = 1.0,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.every = every
        self._stopping = threading.Event()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start passes on the running event loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="officium-webhook-dispatcher")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await anyio.to_thread.run_sync(self._pass)
            except Exception:
                log.exception("webhook delivery pass failed")
            with anyio.move_on_after(self.every):
                await self._wake.wait()

    def _pass(self) -> None:
        deliver_due(self.db, self.settings, self.clock(), stopping=self._stopping)

    async def stop(self) -> None:
        """Finish the delivery in flight (one POST at most), then stop."""
        self._stopping.set()
        if self._task is None:
            return
        self._wake.set()
        await self._task
        self._task = None
