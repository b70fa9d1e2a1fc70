"""What handlers are given: the database, the content store, and the checked caller."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.errors import Forbidden, Unauthenticated
from core.schemas import Role
from server.auth import Principal, PrincipalCache, resolve_token
from server.content import ContentStore
from server.db import Database
from server.settings import Settings
from server.signing import ServerSigner

__all__ = [
    "Admin",
    "Auditor",
    "Caller",
    "Db",
    "Now",
    "Principals",
    "Signer",
    "Store",
    "Uploader",
    "get_settings",
]

_bearer = HTTPBearer(auto_error=False, description="A token from `officium admin token create`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_store(request: Request) -> ContentStore:
    return request.app.state.store


def get_now(request: Request) -> datetime:
    """The app's clock (injectable, so tests can move time)."""
    return request.app.state.clock()


def get_signer(request: Request) -> ServerSigner:
    return request.app.state.signer


def get_principals(request: Request) -> PrincipalCache:
    return request.app.state.principals


Db = Annotated[Database, Depends(get_db)]
Principals = Annotated[PrincipalCache, Depends(get_principals)]
Store = Annotated[ContentStore, Depends(get_store)]
Now = Annotated[datetime, Depends(get_now)]
Signer = Annotated[ServerSigner, Depends(get_signer)]


def current_principal(
    request: Request,
    db: Db,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller behind the bearer token, or 401."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("send a token as 'Authorization: Bearer <token>'")
    cache = get_principals(request)
    principal = cache.get(credentials.credentials)
    if principal is None:
        with db.reading() as session:
            principal = resolve_token(session, credentials.credentials)
        cache.put(credentials.credentials, principal)
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


def require_admin(caller: Caller) -> Principal:
    """The caller, if they hold the admin role."""
    caller.require(Role.admin, why="this")
    return caller


def require_auditor(caller: Caller) -> Principal:
    """The caller, if they hold the auditor or admin role."""
    if caller.has_role(Role.auditor) or caller.has_role(Role.admin):
        return caller
    raise Forbidden(
        f"reading the audit trail needs the auditor or admin role; "
        f"{caller.describe()} holds neither"
    )


def require_uploader(caller: Caller) -> Principal:
    """The caller, if it is an agent or an admin (the ones who upload content)."""
    if caller.is_agent or caller.has_role(Role.admin):
        return caller
    raise Forbidden(f"uploading content is for agents and admins; {caller.describe()} is neither")


Admin = Annotated[Principal, Depends(require_admin)]
Auditor = Annotated[Principal, Depends(require_auditor)]
Uploader = Annotated[Principal, Depends(require_uploader)]
