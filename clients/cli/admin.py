"""Administration commands: offices, persons, memberships, tokens and folders."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.text import Text

from clients.cli import render
from clients.cli.session import Session, client_command
from core.schemas import Role

__all__ = [
    "add_folder",
    "add_member",
    "add_office",
    "add_person",
    "create_token",
    "list_folders",
    "list_members",
    "list_offices",
    "list_persons",
    "list_tokens",
    "revoke_token",
]

OfficeArgument = Annotated[str, typer.Argument(metavar="OFFICE", show_default=False)]
UsernameArgument = Annotated[str, typer.Argument(metavar="USERNAME", show_default=False)]


@client_command
def add_office(
    session: Session,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The office's name.")],
    parent: Annotated[
        str | None, typer.Option(metavar="NAME", help="The office it belongs under.")
    ] = None,
) -> None:
    """Add an office to the hierarchy."""
    office = session.client.create_office(name=name, parent=parent)
    under = f" under {office.parent}" if office.parent else ""
    session.show(office, lambda: Text(f"office {office.name} added{under} (id {office.id})"))


@client_command
def list_offices(session: Session) -> None:
    """Every office and the office it belongs under."""
    offices = session.client.list_offices()
    payload = {"offices": [office.model_dump(mode="json") for office in offices]}
    rows = [(office.id, office.name, office.parent) for office in offices]
    session.show(payload, lambda: render.records_table(("id", "office", "parent"), rows))


@client_command
def add_person(
    session: Session,
    username: UsernameArgument,
    name: Annotated[
        str | None, typer.Option(metavar="TEXT", help="How the person is printed.")
    ] = None,
) -> None:
    """Add a person."""
    person = session.client.create_person(username=username, name=name)
    session.show(
        person, lambda: Text(f"person {person.username} ({person.name}) added (id {person.id})")
    )


@client_command
def list_persons(session: Session) -> None:
    """Every person."""
    persons = session.client.list_persons()
    payload = {"persons": [person.model_dump(mode="json") for person in persons]}
    rows = [(person.id, person.username, person.name) for person in persons]
    session.show(payload, lambda: render.records_table(("id", "username", "name"), rows))


@client_command
def add_member(
    session: Session,
    username: UsernameArgument,
    office: OfficeArgument,
    role: Annotated[Role, typer.Option(help="What the person may do for the office.")],
) -> None:
    """Let a person act for an office with a role."""
    membership = session.client.create_membership(username=username, office=office, role=role)
    session.show(
        membership,
        lambda: Text(
            f"{membership.username} is now {membership.role.value} of {membership.office}"
        ),
    )


@client_command
def list_members(
    session: Session,
    username: Annotated[
        str | None, typer.Option(metavar="USERNAME", help="Only this person's memberships.")
    ] = None,
    office: Annotated[
        str | None, typer.Option(metavar="OFFICE", help="Only this office's members.")
    ] = None,
) -> None:
    """Memberships: who acts for which office, with which role."""
    memberships = session.client.list_memberships(username=username, office=office)
    payload = {"memberships": [item.model_dump(mode="json") for item in memberships]}
    rows = [(item.id, item.username, item.office, item.role.value) for item in memberships]
    session.show(payload, lambda: render.records_table(("id", "username", "office", "role"), rows))


@client_command
def create_token(
    session: Session,
    username: Annotated[
        str | None,
        typer.Argument(metavar="USERNAME", help="The person the token acts for."),
    ] = None,
    folder: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Instead of a person: the folder whose agent uses it."),
    ] = None,
    label: Annotated[
        str | None, typer.Option(metavar="TEXT", help="A note saying what the token is for.")
    ] = None,
) -> None:
    """Create a token; its secret is printed this once and never again."""
    created = session.client.create_token(username=username, folder=folder, label=label)
    if session.as_json:
        session.emit_json(created)
        return
    holder = f"person {created.username}" if created.username else f"folder {created.folder}"
    session.note(f"token {created.id} for {holder}; it is shown only this once:")
    # The secret alone on standard output, so that TOKEN=$(officium admin token create ...) works.
    session.out.print(created.token, markup=False, highlight=False, soft_wrap=True)


@client_command
def list_tokens(session: Session) -> None:
    """Every token, without its secret."""
    tokens = session.client.list_tokens()
    payload = {"tokens": [token.model_dump(mode="json") for token in tokens]}
    rows = [
        (
            token.id,
            token.username or f"folder {token.folder}",
            token.label,
            render.moment(token.created_at),
            render.moment(token.revoked_at) or None,
        )
        for token in tokens
    ]
    columns = ("id", "for", "label", "created", "revoked")
    session.show(payload, lambda: render.records_table(columns, rows))


@client_command
def revoke_token(
    session: Session,
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id.")],
) -> None:
    """Revoke a token; it stops working at once."""
    token = session.client.revoke_token(token_id)
    session.show(token, lambda: Text(f"token {token.id} revoked"))


@client_command
def add_folder(
    session: Session,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The folder's name in Officium.")],
    root: Annotated[
        str,
        typer.Option(metavar="PATH", help="Where the shared folder is, as its agent sees it."),
    ],
    owner: Annotated[
        str | None,
        typer.Option(metavar="OFFICE", help="The office that owns new documents found there."),
    ] = None,
) -> None:
    """Register a shared folder to watch."""
    # A relative root would mean nothing to the server or to an agent started elsewhere.
    folder = session.client.create_folder(
        name=name, root=os.path.abspath(os.path.expanduser(root)), default_owner=owner
    )
    session.show(folder, lambda: Text(f"folder {folder.name} registered at {folder.root}"))


@client_command
def list_folders(session: Session) -> None:
    """Every registered folder."""
    folders = session.client.list_folders()
    payload = {"folders": [folder.model_dump(mode="json") for folder in folders]}
    rows = [(folder.id, folder.name, folder.root, folder.default_owner) for folder in folders]
    session.show(
        payload, lambda: render.records_table(("id", "folder", "root", "default owner"), rows)
    )
