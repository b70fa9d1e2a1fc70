"""Commands about documents: list, status, history, verify, owner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from clients.cli import render
from clients.cli.names import resolve_document, resolve_prefix
from clients.cli.session import Session, client_command, fail
from clients.sdk import sha256_file
from core.schemas import DocumentState

__all__ = ["history", "list_documents", "owner", "status", "verify"]

DocArgument = Annotated[
    str,
    typer.Argument(
        metavar="DOC",
        help="A document: its id, FOLDER:relative/path, or a local path inside a watched folder.",
        show_default=False,
    ),
]


@client_command
def list_documents(
    session: Session,
    prefix: Annotated[
        str | None,
        typer.Argument(
            metavar="PREFIX",
            help="A folder name, FOLDER:path-prefix, or a local directory inside a watched folder.",
            show_default=False,
        ),
    ] = None,
    state: Annotated[
        DocumentState | None, typer.Option(help="Only documents in this state.")
    ] = None,
    owner: Annotated[
        str | None, typer.Option(metavar="OFFICE", help="Only documents owned by this office.")
    ] = None,
    deleted: Annotated[
        bool | None,
        typer.Option(
            "--deleted/--no-deleted",
            help="Only deleted documents, or only present ones (default: both).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Documents under a folder or path prefix, with state, owner and versions."""
    place = resolve_prefix(session.client, prefix) if prefix is not None else None
    folder, path_prefix = (place.folder, place.path or None) if place else (None, None)
    documents = list(
        session.client.iter_documents(
            folder=folder,
            prefix=path_prefix,
            owner=owner,
            state=state,
            deleted=deleted,
        )
    )
    payload = {"documents": [document.model_dump(mode="json") for document in documents]}
    session.show(payload, lambda: render.documents_table(documents))


@client_command
def status(session: Session, doc: DocArgument) -> None:
    """Owner office, state, latest and final version, drift, and whose move it is."""
    document = resolve_document(session.client, doc)
    if session.as_json:
        session.emit_json(document)
        return
    # The open review tells which version it pinned and whether that is still the latest.
    review = None
    if document.review_id is not None:
        reviews = session.client.reviews(document.id)
        review = next((r for r in reviews if r.id == document.review_id), None)
    session.out.print(render.status_panel(document, review=review))


@client_command
def history(session: Session, doc: DocArgument) -> None:
    """Every version and every event of one document."""
    document = resolve_document(session.client, doc)
    record = session.client.history(document.id)
    session.show(record, lambda: render.history(record))


@client_command
def verify(
    session: Session,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            exists=True,
            dir_okay=False,
            readable=True,
            help="A copy of a document.",
            show_default=False,
        ),
    ],
) -> None:
    """Is this copy a recorded version: of which document, which version, is it final?

    The file is hashed here; only its SHA-256 is sent to the server.
    """
    result = session.client.verify(sha256_file(file))
    session.show(result, lambda: render.verify_result(result, label=str(file)))
    if not result.matches:
        raise fail(f"{file} matches no recorded version of any document")


@client_command
def owner(
    session: Session,
    doc: DocArgument,
    office: Annotated[
        str, typer.Argument(metavar="OFFICE", help="The office that takes the document over.")
    ],
    reason: Annotated[str | None, typer.Option(metavar="TEXT", help="Why, for the record.")] = None,
) -> None:
    """Hand a document over to another office."""
    document = resolve_document(session.client, doc)
    changed = session.client.change_owner(document.id, office, reason=reason)
    session.show(
        changed,
        lambda: Text(f"{render.document_name(changed)} is now owned by {changed.owner_office}"),
    )
