"""Watched folders and the version reports their agents send."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from core import schemas
from core.schemas import Name, Role
from server import folders, reports
from server.api.deps import Admin, Caller, Db, Store

router = APIRouter(tags=["folders"])


@router.post("/folders", status_code=201)
def create_folder(body: schemas.FolderCreate, db: Db, admin: Admin) -> schemas.Folder:
    """Register a shared folder, with the root path its agent sees."""
    with db.writing() as session:
        return folders.create_folder(
            session,
            actor=admin.acting(Role.admin),
            name=body.name,
            root=body.root,
            default_owner=body.default_owner,
        )


@router.get("/folders")
def list_folders(db: Db, _: Caller) -> schemas.FolderList:
    """Every registered folder, with its root (clients map local paths through them)."""
    with db.reading() as session:
        return folders.list_folders(session)


@router.post("/folders/{folder}/reports")
def report_versions(
    folder: Annotated[Name, Path()],
    body: schemas.ReportBatch,
    db: Db,
    store: Store,
    caller: Caller,
) -> schemas.ReportBatchResult:
    """Record what the folder's agent saw, in order, all or none; replays are harmless."""
    with db.writing() as session:
        return reports.record_reports(
            session, principal=caller, folder=folder, reports=body.reports, store=store
        )
