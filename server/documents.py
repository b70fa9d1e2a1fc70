"""Documents and their versions: what is recorded, where, whose, and which copy is which."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from core import schemas
from core.errors import Conflict, Forbidden, NotFound
from core.schemas import DocumentState, Role
from server import audit, reviews
from server.auth import Principal
from server.directory import office_by_name
from server.folders import folder_by_name
from server.models import Document, Folder, Office, Person, Version

__all__ = [
    "change_owner",
    "document_history",
    "document_status",
    "get_document",
    "list_documents",
    "lookup_document",
    "status_of",
    "verify_copy",
    "version_of",
    "versions_of",
]


def get_document(session: Session, document_id: int) -> Document:
    """The document with this id, or ``NotFound``."""
    document = session.get(Document, document_id)
    if document is None:
        raise NotFound(f"there is no document with id {document_id}")
    return document


def status_of(
    session: Session, document: Document, *, folder: str, owner: str | None, now: datetime
) -> schemas.DocumentStatus:
    """The wire status of a document whose folder and owner names are known."""
    awaiting, review = reviews.document_awaiting(session, document, now=now)
    final = None
    notes = []
    if document.final_number is not None:
        final = schemas.VersionRef(number=document.final_number, sha256=document.final_sha256)
        if document.latest_number != document.final_number:
            notes.append(
                f"final v{document.final_number}; working copy v{document.latest_number} differs"
            )
    if review is not None and review.version_number != document.latest_number:
        notes.append(
            f"review #{review.id} is of v{review.version_number}; "
            f"working copy v{document.latest_number} differs"
        )
    copy_of = _copy_of(session, document)
    if not notes and copy_of is not None and document.latest_number == 1:
        notes.append(copy_note(copy_of))
    note = "; ".join(notes) or None
    return schemas.DocumentStatus(
        id=document.id,
        folder=folder,
        path=document.path,
        owner_office=owner,
        state=DocumentState(document.state),
        deleted=document.deleted,
        latest=schemas.VersionRef(number=document.latest_number, sha256=document.latest_sha256),
        final=final,
        awaiting=awaiting,
        created_at=document.created_at,
        updated_at=document.updated_at,
        note=note,
        review_id=review.id if review else None,
        pinned=(
            schemas.VersionRef(number=review.version_number, sha256=review.sha256)
            if review
            else None
        ),
        copy_of=copy_of,
        removed=_removal(session, document) if document.deleted else None,
    )


def _removal(session: Session, document: Document) -> schemas.Removal | None:
    """Who removed a deleted document's file and when: its last ``document.deleted`` event."""
    deletions = [
        row
        for row in audit.document_events(session, document_id=document.id)
        if row.action == "document.deleted"
    ]
    if not deletions:
        return None
    event = audit.to_wire(deletions[-1])
    details = event.details
    return schemas.Removal(
        at=event.time,
        by=event.actor.get("name") or event.actor.get("id") or "unknown",
        actor=event.actor.get("id") or "unknown",
        author_hint=details.get("author_hint"),
        reason=details.get("reason"),
        observed_at=details.get("observed_at"),
        seq=event.seq,
    )


def copy_note(copy: schemas.CopyOf) -> str:
    """How a copy is described: of which version, and whether that one still stands."""
    standing = "final" if copy.is_final else "latest" if copy.is_latest else "superseded"
    prefix = "exact copy of" if copy.is_final or copy.is_latest else "copy of superseded"
    if prefix == "copy of superseded":
        return f"copy of superseded v{copy.number} of {copy.folder}:{copy.path}"
    return f"{prefix} {copy.folder}:{copy.path} v{copy.number} ({standing})"


def _copy_of(session: Session, document: Document) -> schemas.CopyOf | None:
    if document.copy_of_document_id is None:
        return None
    row = session.exec(
        select(Document, Folder.name)
        .join(Folder, Folder.id == Document.folder_id)
        .where(Document.id == document.copy_of_document_id)
    ).one()
    source, folder = row
    return schemas.CopyOf(
        document_id=source.id,
        folder=folder,
        path=source.path,
        number=document.copy_of_number,
        is_final=source.final_number == document.copy_of_number,
        is_latest=source.latest_number == document.copy_of_number,
    )


def _status_query():
    return (
        select(Document, Folder.name, Office.name)
        .join(Folder, Folder.id == Document.folder_id)
        .outerjoin(Office, Office.id == Document.owner_office_id)
    )


def document_status(session: Session, document_id: int, *, now: datetime) -> schemas.DocumentStatus:
    """Owner, state, latest and final version and whose move it is, for one document."""
    row = session.exec(_status_query().where(Document.id == document_id)).one_or_none()
    if row is None:
        raise NotFound(f"there is no document with id {document_id}")
    document, folder, owner = row
    return status_of(session, document, folder=folder, owner=owner, now=now)


def lookup_document(
    session: Session, *, folder: str, path: str, now: datetime
) -> schemas.DocumentStatus:
    """The document at ``path`` in ``folder``: the live one, else the last deleted one there."""
    row = session.exec(
        _status_query()
        .where(Folder.name == folder, Document.path == path)
        .order_by(Document.deleted, Document.id.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        folder_by_name(session, folder)
        raise NotFound(f"nothing is recorded at '{folder}:{path}'")
    document, folder_name, owner = row
    return status_of(session, document, folder=folder_name, owner=owner, now=now)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def list_documents(
    session: Session,
    *,
    folder: str | None = None,
    prefix: str | None = None,
    owner: str | None = None,
    state: DocumentState | None = None,
    deleted: bool | None = None,
    after: int = 0,
    limit: int = 100,
    now: datetime,
) -> schemas.DocumentPage:
    """One page of documents matching the filters, in id order."""
    query = _status_query().where(Document.id > after)
    if folder is not None:
        query = query.where(Document.folder_id == folder_by_name(session, folder).id)
    if prefix:
        query = query.where(Document.path.like(_like_prefix(prefix), escape="\\"))
    if owner is not None:
        query = query.where(Document.owner_office_id == office_by_name(session, owner).id)
    if state is not None:
        query = query.where(Document.state == state.value)
    if deleted is not None:
        query = query.where(Document.deleted == deleted)
    rows = session.exec(query.order_by(Document.id).limit(limit + 1)).all()
    page = rows[:limit]
    return schemas.DocumentPage(
        documents=[status_of(session, d, folder=f, owner=o, now=now) for d, f, o in page],
        next=page[-1][0].id if len(rows) > limit else None,
    )


def _version_wire(version: Version, author: str | None) -> schemas.Version:
    return schemas.Version(
        number=version.number,
        sha256=version.sha256,
        size=version.size,
        author=author or "unknown",
        author_hint=version.author_hint,
        commit=version.commit,
        observed_at=version.observed_at,
        recorded_at=version.recorded_at,
    )


def _versions(session: Session, document_id: int) -> list[schemas.Version]:
    rows = session.exec(
        select(Version, Person.username)
        .outerjoin(Person, Person.id == Version.author_person_id)
        .where(Version.document_id == document_id)
        .order_by(Version.number)
    ).all()
    return [_version_wire(version, author) for version, author in rows]


def versions_of(session: Session, document_id: int) -> schemas.VersionList:
    """Every version of a document, oldest first."""
    get_document(session, document_id)
    return schemas.VersionList(document_id=document_id, versions=_versions(session, document_id))


def version_of(session: Session, *, document_id: int, number: int) -> Version:
    """One version of a document, or ``NotFound``."""
    document = get_document(session, document_id)
    version = session.exec(
        select(Version).where(Version.document_id == document_id, Version.number == number)
    ).one_or_none()
    if version is None:
        raise NotFound(
            f"document {document_id} has no version {number} "
            f"(it has versions 1 to {document.latest_number})"
        )
    return version


def document_history(session: Session, document_id: int, *, now: datetime) -> schemas.History:
    """A document's status, every version and every event about it."""
    return schemas.History(
        document=document_status(session, document_id, now=now),
        versions=_versions(session, document_id),
        events=[
            audit.to_wire(row) for row in audit.document_events(session, document_id=document_id)
        ],
    )


def verify_copy(session: Session, sha256: str) -> schemas.VerifyResult:
    """Every recorded (document, version) whose bytes hash to ``sha256``."""
    rows: Sequence = session.exec(
        select(Version.number, Document, Folder.name)
        .join(Document, Document.id == Version.document_id)
        .join(Folder, Folder.id == Document.folder_id)
        .where(Version.sha256 == sha256)
        .order_by(Document.id, Version.number)
    ).all()
    matches = []
    for number, document, folder in rows:
        is_latest = number == document.latest_number
        matches.append(
            schemas.VerifyMatch(
                document_id=document.id,
                folder=folder,
                path=document.path,
                deleted=document.deleted,
                number=number,
                is_latest=is_latest,
                is_final=number == document.final_number,
                superseded_by=None if is_latest else number + 1,
                note=_match_note(session, document, number),
            )
        )
    return schemas.VerifyResult(sha256=sha256, matches=matches)


def _match_note(session: Session, document: Document, number: int) -> str | None:
    if number == 1 and document.copy_of_document_id is not None:
        copy = _copy_of(session, document)
        return copy_note(copy) if copy else None
    return None


def change_owner(
    session: Session,
    *,
    principal: Principal,
    document_id: int,
    office: str,
    reason: str | None,
    now: datetime,
) -> schemas.DocumentStatus:
    """Hand a document to another office (an admin, or an approver of its owner office).

    Its open review, if any, moves with it: reviews belong to the document.
    """
    document = session.exec(
        select(Document).where(Document.id == document_id).with_for_update()
    ).one_or_none()
    if document is None:
        raise NotFound(f"there is no document with id {document_id}")
    target = office_by_name(session, office)
    current = session.get(Office, document.owner_office_id) if document.owner_office_id else None
    grant = principal.has_role(Role.admin)
    if grant is None and current is not None:
        grant = principal.has_role(Role.approver, office_id=current.id)
    if grant is None:
        owner_text = f"its owner office '{current.name}'" if current else "its owner office"
        raise Forbidden(
            f"handing over document {document_id} needs the admin role or the approver "
            f"role in {owner_text}; {principal.describe()} holds neither"
        )
    if current is not None and current.id == target.id:
        raise Conflict(f"document {document_id} is already owned by '{target.name}'")
    document.owner_office_id = target.id
    document.updated_at = now
    session.add(document)
    audit.append(
        session,
        actor=principal.actor(grant),
        action="document.owner_changed",
        subject={"document": document.id, "folder": document.folder_id},
        details={
            "from": current.name if current else None,
            "to": target.name,
            "reason": reason,
            "open_review": getattr(reviews.open_review(session, document.id), "id", None),
        },
        time=now,
    )
    folder = session.get(Folder, document.folder_id)
    return status_of(session, document, folder=folder.name, owner=target.name, now=now)


def count_documents(session: Session) -> int:
    """How many documents are recorded (for metrics)."""
    return session.exec(select(sa.func.count()).select_from(Document)).one()
