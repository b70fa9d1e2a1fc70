"""The FastAPI application: routers, error handlers, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from urllib.parse import unquote_to_bytes

import anyio
from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from core.errors import Invalid, TooLarge, Unavailable
from server.access import AccessLog
from server.api import access as access_api
from server.api import audit, content, directory, documents, folders, notifications, reviews
from server.api import exports as exports_api
from server.api.problems import install_problem_handlers, problem
from server.auth import PrincipalCache
from server.content import ContentStore
from server.db import Database, make_engine
from server.models import SigningKey, utcnow
from server.notifications import Dispatcher
from server.settings import Settings
from server.signing import ServerSigner, load_or_create_key

__all__ = ["create_app"]

API_PREFIX = "/api/v1"


class RequestGuard:
    """Refuse, before the app sees them, requests no handler could read faithfully.

    - a path or query whose percent-escapes are not UTF-8 (the server would otherwise
      see U+FFFD in their place and answer about a different name);
    - a JSON body over the limit, by its Content-Length or, for a chunked body, by
      reading at most the limit first. Content uploads are exempt: the content store
      streams them and applies its own limit.
    """

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = _undecodable(scope)
        if refusal is not None:
            return await problem(422, Invalid.kind, Invalid.title, refusal, scope["path"])(
                scope, receive, send
            )
        if scope["path"].startswith(f"{API_PREFIX}/content/"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                return await self._too_large(scope, receive, send, int(length))
            return await self.app(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        # A chunked body: read it (at most the limit) before the app does.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send, None)
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send, size: int | None):
        said = f"is {size} bytes" if size is not None else "is longer than that"
        response = problem(
            413,
            TooLarge.kind,
            TooLarge.title,
            f"the request body {said}; the limit for JSON requests is {self.max_bytes} bytes",
            scope["path"],
        )
        return await response(scope, receive, send)


def _undecodable(scope) -> str | None:
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    for what, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
        try:
            unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return f"the request's {what} holds percent-escapes that are not valid UTF-8"
    return None


class Metrics:
    """Count and time every request, labelled by route template (pure ASGI: cheap)."""

    def __init__(self, app, *, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "officium_http_requests",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "officium_http_request_seconds",
            "Time to serve a request",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            self.requests.labels(scope["method"], route, str(status)).inc()


def _register_signing_key(app: FastAPI) -> None:
    with app.state.db.reading() as session:
        if session.get(SigningKey, app.state.signer.kid) is not None:
            return
    with app.state.db.writing() as session:
        app.state.signer.register(session)


async def _escalation_sweeper(app: FastAPI, every: float = 60.0) -> None:
    """Record overdue reviews' escalations once a minute (idempotent across replicas)."""
    from server import reviews

    def sweep() -> None:
        with app.state.db.writing() as session:
            reviews.escalate_overdue(session, now=app.state.clock())

    while True:
        await asyncio.sleep(every)
        try:
            await anyio.to_thread.run_sync(sweep)
        except Exception:
            logging.getLogger("officium.server").exception("escalation sweep failed")


def _adopt_signing_key(app: FastAPI) -> None:
    """Sign with the current server key (finishing a rotation a crash interrupted)."""
    from server import checkpoints

    app.state.signer = checkpoints.current_signer(
        app.state.db, app.state.settings, app.state.signer
    )


def _checkpoint(app: FastAPI) -> None:
    """Sign a checkpoint of the audit trail if it moved since the last one."""
    from server import checkpoints

    _adopt_signing_key(app)
    checkpoints.make_checkpoint(
        app.state.db, app.state.signer, app.state.settings, now=app.state.clock()
    )


async def _checkpointer(app: FastAPI, every: float) -> None:
    """Sign a checkpoint every ``every`` seconds when there are new events."""
    while True:
        await asyncio.sleep(every)
        try:
            await anyio.to_thread.run_sync(_checkpoint, app)
        except Exception:
            logging.getLogger("officium.server").exception("checkpoint failed")


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """Build the application for these settings (the database must already be migrated).

    ``clock`` is the time every handler sees; tests pass one they can move.
    """
    db = database or Database(make_engine(settings))
    store = ContentStore(settings.resolved_content_dir, max_bytes=settings.max_upload_bytes)
    store.prepare()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Publish the signing key before any signature needs it, so auditors can keep it.
        await anyio.to_thread.run_sync(_adopt_signing_key, app)
        await anyio.to_thread.run_sync(_register_signing_key, app)
        sweeper = asyncio.create_task(_escalation_sweeper(app))
        checkpointer = asyncio.create_task(_checkpointer(app, settings.checkpoint_seconds))
        dispatcher = Dispatcher(db, settings, clock=lambda: app.state.clock())
        dispatcher.start()
        app.state.access_log.start()
        try:
            yield
        finally:
            sweeper.cancel()
            checkpointer.cancel()
            await dispatcher.stop()
            # The buffered reads, sealed before the shutdown checkpoint (see server/access.py).
            await app.state.access_log.stop()
            try:  # the trail's last state, signed before the process goes
                await anyio.to_thread.run_sync(_checkpoint, app)
            except Exception:
                logging.getLogger("officium.server").exception("the shutdown checkpoint failed")
            if database is None:
                db.dispose()

    app = FastAPI(
        title="Officium",
        summary="Which is the final version, who owns it, who approved it, what happened to it.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.store = store
    app.state.clock = clock
    app.state.principals = PrincipalCache(settings.auth_cache_seconds)
    app.state.signer = ServerSigner(load_or_create_key(settings.resolved_signing_key_file))
    app.state.access_log = AccessLog(
        db, clock=lambda: app.state.clock(), every=settings.access_flush_seconds
    )
    install_problem_handlers(app)
    registry = CollectorRegistry()
    for module in (directory, folders, documents, reviews, content, audit, notifications):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(access_api.router, prefix=API_PREFIX)
    app.include_router(exports_api.router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is up (touches nothing else)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> dict[str, str]:
        """The database answers and the content store is writable."""
        db.ping()
        db.check_schema()
        if not store.is_writable():
            raise Unavailable(f"the content store at {store.root} is not writable")
        return {"status": "ready"}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestGuard, max_bytes=settings.max_json_bytes)
    app.add_middleware(Metrics, registry=registry)
    return app
