"""Watched shared folders: each has a name, the root its agent sees and a default owner."""

from __future__ import annotations

from sqlmodel import Session, select

from core import schemas
from core.errors import Conflict, NotFound
from server import audit
from server.audit import Actor
from server.directory import office_by_name
from server.models import Folder, Office

__all__ = ["create_folder", "folder_by_name", "list_folders"]


def folder_by_name(session: Session, name: str) -> Folder:
    """The folder called ``name``, or ``NotFound``."""
    folder = session.exec(select(Folder).where(Folder.name == name)).one_or_none()
    if folder is None:
        raise NotFound(f"there is no folder called '{name}'")
    return folder


def _wire(folder: Folder, owner: str | None) -> schemas.Folder:
    return schemas.Folder(id=folder.id, name=folder.name, root=folder.root, default_owner=owner)


def create_folder(
    session: Session, *, actor: Actor, name: str, root: str, default_owner: str | None
) -> schemas.Folder:
    """Register a shared folder."""
    if session.exec(select(Folder.id).where(Folder.name == name)).first() is not None:
        raise Conflict(f"a folder called '{name}' already exists")
    owner = office_by_name(session, default_owner) if default_owner else None
    folder = Folder(name=name, root=root, default_owner_id=owner.id if owner else None)
    session.add(folder)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="folder.created",
        subject={"folder": folder.id},
        details={"name": name, "root": root, "default_owner": default_owner},
    )
    return _wire(folder, default_owner)


def list_folders(session: Session) -> schemas.FolderList:
    """Every registered folder."""
    rows = session.exec(
        select(Folder, Office.name)
        .outerjoin(Office, Office.id == Folder.default_owner_id)
        .order_by(Folder.id)
    ).all()
    return schemas.FolderList(folders=[_wire(folder, owner) for folder, owner in rows])
