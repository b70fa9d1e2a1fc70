"""Offices, persons, memberships and tokens: who exists and who may act for whom."""

from __future__ import annotations

from sqlmodel import Session, select

from core import schemas
from core.errors import Conflict, Invalid, NotFound
from core.schemas import Role
from server import audit
from server.audit import SYSTEM, Actor
from server.auth import Principal, hash_token, new_token
from server.models import ApiToken, Folder, Membership, Office, Person, utcnow

__all__ = [
    "bootstrap",
    "create_office",
    "create_person",
    "create_token",
    "describe_principal",
    "grant_membership",
    "list_memberships",
    "list_offices",
    "list_persons",
    "list_tokens",
    "office_by_name",
    "person_by_username",
    "revoke_token",
]

BOOTSTRAP_OFFICE = "Administration"
BOOTSTRAP_USERNAME = "admin"


def office_by_name(session: Session, name: str) -> Office:
    """The office called ``name``, or ``NotFound``."""
    office = session.exec(select(Office).where(Office.name == name)).one_or_none()
    if office is None:
        raise NotFound(f"there is no office called '{name}'")
    return office


def person_by_username(session: Session, username: str) -> Person:
    """The person with ``username``, or ``NotFound``."""
    person = session.exec(select(Person).where(Person.username == username)).one_or_none()
    if person is None:
        raise NotFound(f"there is no person with username '{username}'")
    return person


def _office_wire(session: Session, office: Office) -> schemas.Office:
    parent = session.get(Office, office.parent_id) if office.parent_id else None
    return schemas.Office(id=office.id, name=office.name, parent=parent.name if parent else None)


def _membership_wire(person: Person, office: Office, row: Membership) -> schemas.Membership:
    return schemas.Membership(
        id=row.id, username=person.username, office=office.name, role=Role(row.role)
    )


def _token_wire(session: Session, row: ApiToken) -> schemas.TokenInfo:
    person = session.get(Person, row.person_id) if row.person_id else None
    folder = session.get(Folder, row.folder_id) if row.folder_id else None
    return schemas.TokenInfo(
        id=row.id,
        username=person.username if person else None,
        folder=folder.name if folder else None,
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_office(
    session: Session, *, actor: Actor, name: str, parent: str | None
) -> schemas.Office:
    """Add an office to the hierarchy."""
    if session.exec(select(Office.id).where(Office.name == name)).first() is not None:
        raise Conflict(f"an office called '{name}' already exists")
    parent_office = office_by_name(session, parent) if parent else None
    office = Office(name=name, parent_id=parent_office.id if parent_office else None)
    session.add(office)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="office.created",
        subject={"office": office.id},
        details={"name": name, "parent": parent},
    )
    return _office_wire(session, office)


def list_offices(session: Session) -> schemas.OfficeList:
    """Every office, in creation order."""
    offices = session.exec(select(Office).order_by(Office.id)).all()
    names = {office.id: office.name for office in offices}
    return schemas.OfficeList(
        offices=[
            schemas.Office(id=o.id, name=o.name, parent=names.get(o.parent_id)) for o in offices
        ]
    )


def create_person(
    session: Session, *, actor: Actor, username: str, name: str | None
) -> schemas.Person:
    """Register a person."""
    if session.exec(select(Person.id).where(Person.username == username)).first() is not None:
        raise Conflict(f"a person with username '{username}' already exists")
    person = Person(username=username, name=name or username)
    session.add(person)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="person.created",
        subject={"person": person.id},
        details={"username": username, "name": person.name},
    )
    return schemas.Person(id=person.id, username=person.username, name=person.name)


def list_persons(session: Session) -> schemas.PersonList:
    """Every person, in creation order."""
    persons = session.exec(select(Person).order_by(Person.id)).all()
    return schemas.PersonList(
        persons=[schemas.Person(id=p.id, username=p.username, name=p.name) for p in persons]
    )


def grant_membership(
    session: Session, *, actor: Actor, username: str, office: str, role: Role
) -> schemas.Membership:
    """Let a person act for an office with a role."""
    person = person_by_username(session, username)
    office_row = office_by_name(session, office)
    existing = session.exec(
        select(Membership).where(
            Membership.person_id == person.id,
            Membership.office_id == office_row.id,
            Membership.role == role.value,
        )
    ).one_or_none()
    if existing is not None:
        raise Conflict(f"'{username}' already holds the '{role}' role in '{office}'")
    row = Membership(person_id=person.id, office_id=office_row.id, role=role.value)
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="membership.granted",
        subject={"person": person.id, "office": office_row.id},
        details={"username": username, "office": office, "role": role.value},
    )
    return _membership_wire(person, office_row, row)


def list_memberships(
    session: Session, *, username: str | None = None, office: str | None = None
) -> schemas.MembershipList:
    """Memberships, optionally of one person or one office."""
    query = (
        select(Membership, Person, Office)
        .join(Person, Person.id == Membership.person_id)
        .join(Office, Office.id == Membership.office_id)
        .order_by(Membership.id)
    )
    if username is not None:
        query = query.where(Person.username == username)
    if office is not None:
        query = query.where(Office.name == office)
    return schemas.MembershipList(
        memberships=[_membership_wire(p, o, m) for m, p, o in session.exec(query)]
    )


def create_token(
    session: Session,
    *,
    actor: Actor,
    username: str | None,
    folder: str | None,
    label: str | None,
) -> schemas.TokenCreated:
    """Issue a token for a person or for a folder's agent; the secret is returned once."""
    if (username is None) == (folder is None):
        raise Invalid("a token belongs to exactly one person or one folder")
    person = person_by_username(session, username) if username else None
    folder_row = None
    if folder is not None:
        folder_row = session.exec(select(Folder).where(Folder.name == folder)).one_or_none()
        if folder_row is None:
            raise NotFound(f"there is no folder called '{folder}'")
    secret = new_token()
    row = ApiToken(
        token_hash=hash_token(secret),
        person_id=person.id if person else None,
        folder_id=folder_row.id if folder_row else None,
        label=label,
    )
    session.add(row)
    session.flush()
    subject = {"token": row.id}
    if person:
        subject["person"] = person.id
    if folder_row:
        subject["folder"] = folder_row.id
    audit.append(
        session,
        actor=actor,
        action="token.created",
        subject=subject,
        details={"username": username, "folder": folder, "label": label},
    )
    return schemas.TokenCreated(id=row.id, token=secret, username=username, folder=folder)


def list_tokens(session: Session) -> schemas.TokenList:
    """Every token (never the secrets), in creation order."""
    rows = session.exec(select(ApiToken).order_by(ApiToken.id)).all()
    return schemas.TokenList(tokens=[_token_wire(session, row) for row in rows])


def revoke_token(session: Session, *, actor: Actor, token_id: int) -> schemas.TokenInfo:
    """Revoke a token; it stops working at once."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"there is no token with id {token_id}")
    if row.revoked_at is not None:
        raise Conflict(f"token {token_id} was already revoked")
    row.revoked_at = utcnow()
    session.add(row)
    audit.append(session, actor=actor, action="token.revoked", subject={"token": row.id})
    return _token_wire(session, row)


def describe_principal(principal: Principal) -> schemas.Me:
    """What the API says about the caller."""
    return schemas.Me(
        kind="agent" if principal.is_agent else "person",
        username=principal.username,
        name=principal.name,
        folder=principal.folder,
        memberships=[
            schemas.Membership(
                id=0, username=principal.username or "", office=m.office, role=m.role
            )
            for m in principal.memberships
        ],
    )


def bootstrap(session: Session, *, token: str | None) -> str | None:
    """On an empty register, create the first admin; return its token, or None if not empty.

    With ``token`` (OFFICIUM_BOOTSTRAP_TOKEN) that token is used; otherwise one is made.
    """
    if session.exec(select(Person.id)).first() is not None:
        return None
    office = Office(name=BOOTSTRAP_OFFICE)
    person = Person(username=BOOTSTRAP_USERNAME, name="Administrator")
    session.add(office)
    session.add(person)
    session.flush()
    session.add(Membership(person_id=person.id, office_id=office.id, role=Role.admin.value))
    secret = token or new_token()
    row = ApiToken(token_hash=hash_token(secret), person_id=person.id, label="bootstrap")
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=SYSTEM,
        action="register.bootstrapped",
        subject={"office": office.id, "person": person.id, "token": row.id},
        details={
            "office": office.name,
            "username": person.username,
            "role": Role.admin.value,
            "token_from": "environment" if token else "generated",
        },
    )
    return secret
