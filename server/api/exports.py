"""Exports for auditors: the trail as a verifiable bundle or a CSV sheet, and certificates.

The filters are checked and the checkpoint pinned before the first byte is sent, so a
bad request is a problem document, never a cut-off stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from core.schemas import Id, Name
from server import access, certificate, checkpoints, export
from server.api.deps import Auditor, Caller, Db, Now, Signer, Store, get_settings
from server.models import Checkpoint
from server.settings import Settings

router = APIRouter(tags=["audit"])

AppSettings = Annotated[Settings, Depends(get_settings)]


class ExportFormat(StrEnum):
    bundle = "bundle"
    csv = "csv"


_MEDIA_TYPE = {ExportFormat.bundle: "application/x-ndjson", ExportFormat.csv: "text/csv"}
_SUFFIX = {ExportFormat.bundle: "jsonl", ExportFormat.csv: "csv"}


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is read as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _filename(fmt: ExportFormat, scope: export.Scope, pinned: Checkpoint) -> str:
    parts = ["officium-audit"]
    if scope.document is not None:
        parts.append(f"document-{scope.document}")
    if scope.office_id is not None:
        parts.append(f"office-{scope.office_id}")
    if scope.since is not None or scope.until is not None:
        parts.append("range")
    parts.append(str(pinned.tree_size))
    return f"{'-'.join(parts)}.{_SUFFIX[fmt]}"


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
)
def export_audit(
    request: Request,
    db: Db,
    store: Store,
    settings: AppSettings,
    signer: Signer,
    now: Now,
    caller: Auditor,
    format: ExportFormat = ExportFormat.bundle,
    document: Annotated[Id | None, Query(description="Only this document's events.")] = None,
    office: Annotated[
        Name | None, Query(description="Only the events of documents this office ever owned.")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Events at or after (UTC if no zone).")
    ] = None,
    until: Annotated[datetime | None, Query(description="Events before (UTC if no zone).")] = None,
    content: Annotated[bool, Query(description="Bundle: include the versions' bytes.")] = False,
) -> StreamingResponse:
    """The audit trail pinned to a signed checkpoint, streamed: a bundle (JSON Lines) or CSV."""
    with db.reading() as session:
        scope = export.resolve_scope(
            session, document=document, office=office, since=_utc(since), until=_utc(until)
        )
    pinned = checkpoints.pin(db, signer, settings, now=now)
    if format is ExportFormat.bundle:
        lines = export.bundle_lines(
            db, store, settings, checkpoint=pinned, scope=scope, now=now, with_content=content
        )
    else:
        lines = export.csv_lines(db, tree_size=pinned.tree_size, scope=scope)
    filters = ", ".join(f"{name}={value}" for name, value in scope.filters().items())
    access.record(
        request.app,
        caller,
        "audit.export",
        document_id=scope.document,
        detail=f"{format.value} of {pinned.tree_size} events" + (f"; {filters}" if filters else ""),
    )
    return StreamingResponse(
        export.chunked(lines),
        media_type=_MEDIA_TYPE[format],
        headers={
            "Content-Disposition": f'attachment; filename="{_filename(format, scope, pinned)}"',
            "X-Officium-Tree-Size": str(pinned.tree_size),
        },
    )


@router.get(
    "/documents/{document_id}/certificate",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def document_certificate(
    document_id: Annotated[Id, Path(description="The document's id.")],
    request: Request,
    db: Db,
    settings: AppSettings,
    signer: Signer,
    now: Now,
    caller: Caller,
) -> Response:
    """A PDF certificate of completion: versions, reviews, signed decisions, checkpoint."""
    with db.reading() as session:
        export.resolve_scope(session, document=document_id)
    pinned = checkpoints.pin(db, signer, settings, now=now)
    with export.snapshot(db) as session:
        pdf = certificate.certificate_pdf(
            session,
            document_id=document_id,
            checkpoint=pinned,
            origin=checkpoints.origin(session, settings),
            now=now,
            font=settings.pdf_font,
            bold_font=settings.pdf_font_bold,
        )
    access.record(
        request.app,
        caller,
        "certificate.download",
        document_id=document_id,
        detail=f"verified against the checkpoint of {pinned.tree_size} events",
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": (
                f'attachment; filename="officium-certificate-{document_id}.pdf"'
            ),
        },
    )
