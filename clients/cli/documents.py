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

__all__ = ["history", "list_documents", "owner", "restore", "status", "verify"]

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


@client_command
def restore(
    session: Session,
    doc: DocArgument,
    version: Annotated[int, typer.Option("--version", min=1, help="The version to put back.")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write there instead of into the shared folder."),
    ] = None,
) -> None:
    """Put a version back into the share (the agent then records it as a new version)."""
    document = resolve_document(session.client, doc)
    if output is None:
        folders = {folder.name: folder for folder in session.client.list_folders()}
        root = Path(folders[document.folder].root)
        if not root.is_dir():
            raise fail(
                f"the folder '{document.folder}' ({root}) is not reachable from here; "
                "give -o FILE to write the bytes elsewhere"
            )
        output = root / document.path
        if not output.resolve().is_relative_to(root.resolve()):
            raise fail(f"{document.path} would land outside the folder {root}; refused")
        output.parent.mkdir(parents=True, exist_ok=True)
    # The SDK writes beside the target and renames into place once the SHA-256 matches,
    # so the agent never sees a half-written restore.
    digest = session.client.download(document.id, version, output)
    result = {
        "document_id": document.id,
        "number": version,
        "sha256": digest,
        "file": str(output),
    }
    session.show(
        result,
        lambda: Text(f"restored v{version} of {document.folder}:{document.path} to {output}"),
    )
