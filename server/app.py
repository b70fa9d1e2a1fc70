"""The FastAPI application: routers, error handlers, health, readiness and metrics."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from core.errors import TooLarge, Unavailable
from server.api import audit, content, directory, documents, folders
from server.api.problems import install_problem_handlers, problem
from server.content import ContentStore
from server.db import Database, make_engine
from server.settings import Settings

__all__ = ["create_app"]

API_PREFIX = "/api/v1"


class BodyLimit:
    """Refuse JSON bodies over the limit before they are read into memory.

    Content uploads are exempt: the content store streams them and applies its own limit.
    """

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(f"{API_PREFIX}/content/"):
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = problem(
                    413,
                    TooLarge.kind,
                    TooLarge.title,
                    f"the request body is {int(value)} bytes; the limit is {self.max_bytes}",
                    scope["path"],
                )
                return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise TooLarge(f"the request body is over the limit of {self.max_bytes} bytes")
            return message

        return await self.app(scope, limited_receive, send)


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


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """Build the application for these settings (the database must already be migrated)."""
    db = database or Database(make_engine(settings))
    store = ContentStore(settings.resolved_content_dir, max_bytes=settings.max_upload_bytes)
    store.prepare()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
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
    install_problem_handlers(app)
    registry = CollectorRegistry()
    for module in (directory, folders, documents, content, audit):
        app.include_router(module.router, prefix=API_PREFIX)

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

    app.add_middleware(BodyLimit, max_bytes=settings.max_json_bytes)
    app.add_middleware(Metrics, registry=registry)
    return app
