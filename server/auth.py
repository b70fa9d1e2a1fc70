"""Who is calling: bearer tokens resolved to a person or a folder's agent, with roles.

Role checks live here and in the services, never copied into handlers.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlmodel import Session, select

from core.errors import Forbidden, Unauthenticated
from core.schemas import Role
from server.audit import Actor
from server.models import ApiToken, Folder, Membership, Office, Person

__all__ = [
    "MembershipRef",
    "Principal",
    "PrincipalCache",
    "hash_token",
    "new_token",
    "resolve_token",
]

TOKEN_PREFIX = "off_"


def new_token() -> str:
    """A fresh random bearer token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """How a token is stored: its SHA-256 (tokens are random, so no salt or stretching)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class MembershipRef:
    office_id: int
    office: str
    role: Role


@dataclass(frozen=True, slots=True)
class Principal:
    """The person or agent a request speaks for."""

    token_id: int
    name: str
    person_id: int | None = None
    username: str | None = None
    folder_id: int | None = None
    folder: str | None = None
    memberships: tuple[MembershipRef, ...] = ()

    @property
    def is_agent(self) -> bool:
        return self.folder_id is not None

    def has_role(self, role: Role, *, office_id: int | None = None) -> MembershipRef | None:
        """The membership granting ``role`` (in ``office_id`` if given), or None."""
        for membership in self.memberships:
            if membership.role is role and office_id in (None, membership.office_id):
                return membership
        return None

    def actor(self, grant: MembershipRef | None = None) -> Actor:
        """This principal as the audit trail records it."""
        if self.is_agent:
            return Actor(id=f"agent:{self.token_id}", name=self.name, office=None, role="agent")
        return Actor(
            id=f"person:{self.person_id}",
            name=self.name,
            office=grant.office if grant else None,
            role=grant.role.value if grant else None,
        )

    def acting(self, role: Role) -> Actor:
        """This principal as recorded when acting under ``role`` (which it must hold)."""
        return self.actor(self.require(role, why="this"))

    def require(self, role: Role, *, why: str) -> MembershipRef:
        """The membership granting ``role`` anywhere, or ``Forbidden`` saying what it was for."""
        grant = self.has_role(role)
        if grant is None:
            raise Forbidden(f"{why} needs the '{role}' role; {self.describe()} does not hold it")
        return grant

    def describe(self) -> str:
        if self.is_agent:
            return f"the agent of folder '{self.folder}'"
        return f"'{self.username}'"


def resolve_token(session: Session, token: str) -> Principal:
    """The principal behind a bearer token, or ``Unauthenticated``."""
    row = session.exec(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token))
    ).one_or_none()
    if row is None:
        raise Unauthenticated("the token is not known")
    if row.revoked_at is not None:
        raise Unauthenticated("the token has been revoked")
    if row.folder_id is not None:
        folder = session.get(Folder, row.folder_id)
        return Principal(
            token_id=row.id,
            name=f"agent of {folder.name}",
            folder_id=folder.id,
            folder=folder.name,
        )
    person = session.get(Person, row.person_id)
    grants = session.exec(
        select(Membership.office_id, Office.name, Membership.role)
        .join(Office, Office.id == Membership.office_id)
        .where(Membership.person_id == person.id)
        .order_by(Membership.id)
    ).all()
    return Principal(
        token_id=row.id,
        name=person.name,
        person_id=person.id,
        username=person.username,
        memberships=tuple(MembershipRef(oid, oname, Role(role)) for oid, oname, role in grants),
    )


class PrincipalCache:
    """Resolved tokens, kept for a few seconds so hot read paths skip three queries.

    A revocation or a new membership takes effect at once on the process that made it
    (the cache is cleared) and within ``ttl`` seconds on the other replicas.
    """

    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(hash_token(token))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[hash_token(token)] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
