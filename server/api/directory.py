"""Offices, persons, memberships and tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from core import schemas
from core.schemas import Id, Name, Role, Username
from server import directory
from server.api.deps import Admin, Caller, Db, Principals

router = APIRouter(tags=["directory"])


@router.get("/me")
def who_am_i(caller: Caller) -> schemas.Me:
    """Who the presented token speaks for, with their memberships."""
    return directory.describe_principal(caller)


@router.post("/offices", status_code=201)
def create_office(body: schemas.OfficeCreate, db: Db, admin: Admin) -> schemas.Office:
    """Add an office to the hierarchy."""
    with db.writing() as session:
        return directory.create_office(
            session,
            actor=admin.acting(Role.admin),
            name=body.name,
            parent=body.parent,
        )


@router.get("/offices")
def list_offices(db: Db, _: Caller) -> schemas.OfficeList:
    """Every office."""
    with db.reading() as session:
        return directory.list_offices(session)


@router.post("/persons", status_code=201)
def create_person(body: schemas.PersonCreate, db: Db, admin: Admin) -> schemas.Person:
    """Register a person."""
    with db.writing() as session:
        return directory.create_person(
            session,
            actor=admin.acting(Role.admin),
            username=body.username,
            name=body.name,
        )


@router.get("/persons")
def list_persons(db: Db, _: Caller) -> schemas.PersonList:
    """Every person."""
    with db.reading() as session:
        return directory.list_persons(session)


@router.post("/memberships", status_code=201)
def grant_membership(
    body: schemas.MembershipCreate, db: Db, admin: Admin, principals: Principals
) -> schemas.Membership:
    """Let a person act for an office with a role."""
    with db.writing() as session:
        granted = directory.grant_membership(
            session,
            actor=admin.acting(Role.admin),
            username=body.username,
            office=body.office,
            role=body.role,
        )
    principals.clear()
    return granted


@router.get("/memberships")
def list_memberships(
    db: Db,
    _: Caller,
    username: Annotated[Username | None, Query()] = None,
    office: Annotated[Name | None, Query()] = None,
) -> schemas.MembershipList:
    """Memberships, optionally of one person or one office."""
    with db.reading() as session:
        return directory.list_memberships(session, username=username, office=office)


@router.post("/tokens", status_code=201)
def create_token(body: schemas.TokenCreate, db: Db, admin: Admin) -> schemas.TokenCreated:
    """Issue a token for a person or a folder's agent; the secret is shown only here."""
    with db.writing() as session:
        return directory.create_token(
            session,
            actor=admin.acting(Role.admin),
            username=body.username,
            folder=body.folder,
            label=body.label,
        )


@router.get("/tokens")
def list_tokens(db: Db, _: Admin) -> schemas.TokenList:
    """Every token, without secrets."""
    with db.reading() as session:
        return directory.list_tokens(session)


@router.delete("/tokens/{token_id}")
def revoke_token(
    token_id: Annotated[Id, Path()], db: Db, admin: Admin, principals: Principals
) -> schemas.TokenInfo:
    """Revoke a token; it stops working at once here, within seconds on other replicas."""
    with db.writing() as session:
        revoked = directory.revoke_token(session, actor=admin.acting(Role.admin), token_id=token_id)
    principals.clear()
    return revoked
