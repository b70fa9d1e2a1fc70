"""Every error leaves the server as application/problem+json (RFC 9457), one table deep."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OfficiumError,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

__all__ = ["install_problem_handlers", "problem"]

log = logging.getLogger("officium.server")

STATUS_OF: dict[type[OfficiumError], int] = {
    Invalid: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Unauthenticated: 401,
    TooLarge: 413,
    Unavailable: 503,
}
_KIND_OF_STATUS = {status: cls.kind for cls, status in STATUS_OF.items()}
_KIND_OF_STATUS.update({400: Invalid.kind, 405: "method-not-allowed", 415: Invalid.kind})


def problem(status: int, kind: str, title: str, detail: str, instance: str) -> JSONResponse:
    """A problem+json response."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {
            "type": f"urn:officium:problem:{kind}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": instance,
        },
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def _where(location: tuple) -> str:
    parts = [str(part) for part in location if part not in ("body",)]
    return ".".join(parts) if parts else "request body"


def _validation_detail(exc: RequestValidationError) -> str:
    messages = []
    for error in exc.errors()[:5]:
        message = error.get("msg", "is invalid").removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            messages.append("the body is not valid JSON")
            continue
        messages.append(f"{_where(tuple(error.get('loc', ())))}: {message}")
    if len(exc.errors()) > 5:
        messages.append(f"and {len(exc.errors()) - 5} more")
    return "; ".join(messages)


def install_problem_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and stray HTTP errors to problem+json."""

    @app.exception_handler(OfficiumError)
    async def _domain(request: Request, exc: OfficiumError):
        status = STATUS_OF.get(type(exc), 400)
        return problem(status, exc.kind, exc.title, exc.detail, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return problem(422, Invalid.kind, Invalid.title, _validation_detail(exc), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (not UTF-8, not JSON).
            return problem(
                422,
                Invalid.kind,
                Invalid.title,
                "the request body could not be read as JSON (it must be UTF-8 JSON)",
                request.url.path,
            )
        kind = _KIND_OF_STATUS.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else "the request was refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is no such endpoint: {request.method} {request.url.path}"
        return problem(exc.status_code, kind, detail, detail, request.url.path)

    @app.exception_handler(sa_exc.OperationalError)
    async def _database_down(request: Request, exc: sa_exc.OperationalError):
        # Connection loss, lock timeouts: the request changed nothing and may be retried.
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem(
            503,
            Unavailable.kind,
            Unavailable.title,
            "the database did not answer in time; nothing was changed, try again",
            request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(
            500,
            "internal",
            "Internal error",
            "the server failed unexpectedly; the request changed nothing and was logged",
            request.url.path,
        )
