"""Notifications: the audit trail as server-sent events, and webhooks that receive it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Path, Query
from sqlalchemy import exc as sa_exc
from sse_starlette import EventSourceResponse, ServerSentEvent

from core.errors import Invalid
from core.schemas import Id, Name, Role
from server import notifications
from server.api.deps import Admin, Caller, Db, Now
from server.db import Database

router = APIRouter(tags=["notifications"])

log = logging.getLogger("officium.server")

MAX_SEQ = 2**62
# How often a stream looks for new events in the database (shared by all replicas).
POLL_SECONDS = 0.5
# How often a quiet stream sends a keep-alive comment, and moves the client's resume
# point past events its filters skipped (an ``id:`` line with no data).
PING_SECONDS = 15.0
# A client that stops reading for this long is dropped; it resumes by Last-Event-ID.
SEND_TIMEOUT_SECONDS = 30.0
# At server shutdown, how long a stream may take to finish its current step and end.
SHUTDOWN_GRACE_SECONDS = 2.0

WebhookId = Annotated[Id, Path(description="The webhook's id.")]


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return after
    text = last_event_id.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_SEQ:
        raise Invalid("Last-Event-ID must be the seq of an event this stream sent")
    return int(text)


async def _stream(
    db: Database, event_filter: notifications.EventFilter, start: int, closing: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    cursor = last_id = start
    marked = time.monotonic()

    def read(after: int) -> notifications.EventPage:
        with db.reading() as session:
            return notifications.matching_events(session, event_filter, after=after)

    while not closing.is_set():
        try:
            page = await anyio.to_thread.run_sync(read, cursor)
        except sa_exc.SQLAlchemyError as exc:
            # End the stream; the client reconnects with Last-Event-ID and loses nothing.
            log.warning("event stream ended: the database failed: %s", exc)
            return
        for event in page.events:
            yield ServerSentEvent(data=event.canonical, id=str(event.seq), event=event.action)
            last_id, marked = event.seq, time.monotonic()
        cursor = page.scanned
        if cursor > last_id and time.monotonic() - marked >= PING_SECONDS:
            yield ServerSentEvent(id=str(cursor))
            last_id, marked = cursor, time.monotonic()
        if not page.more:
            with anyio.move_on_after(POLL_SECONDS):
                await closing.wait()


@router.get(
    "/events/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "One SSE event per audit event: `id` is its seq, `event` its "
            "action, `data` its exact canonical JSON text.",
        }
    },
)
async def stream_events(
    db: Db,
    _: Caller,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_SEQ, description="Send events after this seq (default: from now)."),
    ] = None,
    document: Annotated[Id | None, Query(description="Only events about this document.")] = None,
    folder: Annotated[Name | None, Query(description="Only events of this folder.")] = None,
    office: Annotated[
        Name | None, Query(description="Only events about documents this office owns.")
    ] = None,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this seq (sent by reconnecting clients).")
    ] = None,
) -> EventSourceResponse:
    """Audit events as they are recorded, in seq order, as server-sent events.

    A reconnecting client sends ``Last-Event-ID`` (or ``after``) and receives every
    later event once. An ``id:`` line without data only moves the resume point past
    events the filters skipped.
    """
    resume = _resume_point(last_event_id, after)

    def begin() -> tuple[notifications.EventFilter, int]:
        with db.reading() as session:
            event_filter = notifications.resolve_filter(
                session, document=document, folder=folder, office=office
            )
            return event_filter, resume if resume is not None else notifications.head_seq(session)

    event_filter, start = await anyio.to_thread.run_sync(begin)
    # Set by sse-starlette when the server is stopping: the stream then ends cleanly
    # (a complete response) instead of being cut, and the client resumes elsewhere.
    closing = anyio.Event()
    return EventSourceResponse(
        _stream(db, event_filter, start, closing),
        ping=PING_SECONDS,
        send_timeout=SEND_TIMEOUT_SECONDS,
        shutdown_event=closing,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )


@router.post("/webhooks", status_code=201)
def create_webhook(
    body: notifications.WebhookCreate, db: Db, admin: Admin, now: Now
) -> notifications.WebhookCreated:
    """Register a receiver of signed event deliveries; its secret is shown only here."""
    with db.writing() as session:
        return notifications.create_webhook(
            session, actor=admin.acting(Role.admin), request=body, now=now
        )


@router.get("/webhooks")
def list_webhooks(db: Db, _: Admin) -> notifications.WebhookList:
    """Every webhook and how far its delivery has got (no secrets)."""
    with db.reading() as session:
        return notifications.list_webhooks(session)


@router.delete("/webhooks/{webhook_id}")
def remove_webhook(
    webhook_id: WebhookId, db: Db, admin: Admin, now: Now
) -> notifications.WebhookInfo:
    """Stop delivering to a webhook (it stays listed, with its delivery log)."""
    with db.writing() as session:
        return notifications.deactivate_webhook(
            session, actor=admin.acting(Role.admin), webhook_id=webhook_id, now=now
        )


@router.get("/webhooks/{webhook_id}/deliveries")
def webhook_deliveries(
    webhook_id: WebhookId,
    db: Db,
    _: Admin,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="A log entry's id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> notifications.DeliveryPage:
    """The delivery log: every attempt, with the receiver's status code or the error."""
    with db.reading() as session:
        return notifications.delivery_log(session, webhook_id=webhook_id, after=after, limit=limit)
