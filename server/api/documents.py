"""Documents, versions, ownership and copy verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse

from core import schemas
from core.errors import Unavailable
from core.schemas import DocumentState, Id, Name, PathPrefix, RelPath, Sha256
from server import access, documents
from server.api.deps import Caller, Db, Now, Store

router = APIRouter(tags=["documents"])

DocumentId = Annotated[Id, Path(description="The document's id.")]


@router.get("/documents")
def list_documents(
    db: Db,
    _: Caller,
    now: Now,
    folder: Annotated[Name | None, Query()] = None,
    prefix: Annotated[PathPrefix | None, Query()] = None,
    owner: Annotated[Name | None, Query(description="Owner office")] = None,
    state: DocumentState | None = None,
    deleted: bool | None = None,
    after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> schemas.DocumentPage:
    """Documents matching the filters, one page at a time (pass ``next`` as ``after``)."""
    with db.reading() as session:
        return documents.list_documents(
            session,
            folder=folder,
            prefix=prefix,
            owner=owner,
            state=state,
            deleted=deleted,
            after=after,
            limit=limit,
            now=now,
        )


@router.get("/documents/lookup")
def lookup_document(
    db: Db,
    _: Caller,
    now: Now,
    folder: Annotated[Name, Query()],
    path: Annotated[RelPath, Query()],
) -> schemas.DocumentStatus:
    """The document at a path of a folder."""
    with db.reading() as session:
        return documents.lookup_document(session, folder=folder, path=path, now=now)


@router.get("/documents/{document_id}")
def document_status(document_id: DocumentId, db: Db, _: Caller, now: Now) -> schemas.DocumentStatus:
    """Owner office, state, latest and final version, and whose move it is."""
    with db.reading() as session:
        return documents.document_status(session, document_id, now=now)


@router.get("/documents/{document_id}/versions")
def list_versions(document_id: DocumentId, db: Db, _: Caller) -> schemas.VersionList:
    """Every version of a document, oldest first."""
    with db.reading() as session:
        return documents.versions_of(session, document_id)


@router.get(
    "/documents/{document_id}/versions/{number}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_version(
    document_id: DocumentId,
    number: Annotated[Id, Path()],
    request: Request,
    db: Db,
    store: Store,
    caller: Caller,
) -> FileResponse:
    """The exact bytes of one version (the read is recorded in the access log)."""
    with db.reading() as session:
        version = documents.version_of(session, document_id=document_id, number=number)
    path = store.path_for(version.sha256)
    if not path.is_file():
        raise Unavailable(
            f"the bytes of version {number} ({version.sha256}) are missing from the content "
            "store; check the store's volume"
        )
    access.record(
        request.app,
        caller,
        "content.download",
        document_id=document_id,
        version_number=number,
        detail=version.sha256,
    )
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"X-Officium-SHA256": version.sha256, "ETag": f'"{version.sha256}"'},
    )


@router.get("/documents/{document_id}/history")
def document_history(document_id: DocumentId, db: Db, _: Caller, now: Now) -> schemas.History:
    """Every version and every event of one document."""
    with db.reading() as session:
        return documents.document_history(session, document_id, now=now)


@router.post("/documents/{document_id}/owner")
def change_owner(
    document_id: DocumentId, body: schemas.OwnerChange, db: Db, caller: Caller, now: Now
) -> schemas.DocumentStatus:
    """Hand a document to another office; its open review moves with it."""
    with db.writing() as session:
        return documents.change_owner(
            session,
            principal=caller,
            document_id=document_id,
            office=body.office,
            reason=body.reason,
            now=now,
        )


@router.get("/verify/{sha256}")
def verify_copy(
    sha256: Annotated[Sha256, Path()], request: Request, db: Db, caller: Caller
) -> schemas.VerifyResult:
    """Is a copy with this SHA-256 a recorded version, which one, and is it the latest?

    The look-up is recorded in the access log, once per matching version (once if none).
    """
    with db.reading() as session:
        result = documents.verify_copy(session, sha256)
    for match in result.matches or [None]:
        access.record(
            request.app,
            caller,
            "verify.lookup",
            document_id=match.document_id if match else None,
            version_number=match.number if match else None,
            detail=sha256,
        )
    return result
