"""How a person names a document on the command line, and how that becomes a record.

A document is named by its id (``42``), by ``FOLDER:relative/path``, or by a local path
inside a watched folder, which is mapped through the roots the folders were registered
with. A listing prefix is named the same ways, or by a bare folder name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from clients.sdk import OfficiumClient
from core.errors import Invalid, NotFound
from core.schemas import DocumentStatus, Folder

__all__ = ["Place", "locate", "resolve_document", "resolve_prefix"]


@dataclass(frozen=True, slots=True)
class Place:
    """A folder and a path (or path prefix) inside it; ``path`` is "" for the whole folder."""

    folder: str
    path: str

    def __str__(self) -> str:
        return f"{self.folder}:{self.path}"


def resolve_document(client: OfficiumClient, name: str) -> DocumentStatus:
    """The document that ``name`` (an id, ``FOLDER:path`` or a local path) stands for."""
    try:
        if name.isdigit():
            return client.document(int(name))
        place = _folder_and_path(name)
        if place is None:
            if not _looks_local(name):
                raise Invalid(
                    f"cannot tell which document {name!r} is: give an id, FOLDER:path, "
                    "or a path to the file"
                )
            place = locate(client.list_folders(), name)
        if not place.path:
            raise Invalid(f"{name!r} is a whole folder, not a document")
        return client.lookup(place.folder, place.path)
    except NotFound as exc:
        raise NotFound(f"{name} is not a recorded document ({exc.detail})") from None


def resolve_prefix(client: OfficiumClient, name: str) -> Place:
    """The folder and path prefix that ``name`` names, for listing documents under it."""
    place = _folder_and_path(name)
    if place is not None:
        return place
    folders = client.list_folders()
    if _looks_local(name):
        try:
            place = locate(folders, name)
        except Invalid:
            if name not in {folder.name for folder in folders}:
                raise
        else:
            # A directory lists what is inside it, not its namesakes ("plans" vs "plans-old").
            if place.path and (os.path.isdir(name) or name.endswith(("/", os.sep))):
                return Place(place.folder, place.path + "/")
            return place
    if name in {folder.name for folder in folders}:
        return Place(name, "")
    raise NotFound(f"no folder is registered as {name!r}")


def locate(folders: list[Folder], local_path: str) -> Place:
    """Map a local file-system path to a folder and a path relative to the folder's root."""
    candidates = _spellings(local_path)
    best: tuple[int, Place] | None = None
    for folder in folders:
        for root in _spellings(folder.root):
            for candidate in candidates:
                relative = _inside(candidate, root)
                if relative is not None and (best is None or len(root) > best[0]):
                    best = (len(root), Place(folder.name, relative))
    if best is None:
        raise Invalid(
            f"{local_path} is not inside any registered folder; name the document as "
            "FOLDER:path or by its id"
        )
    return best[1]


def _folder_and_path(name: str) -> Place | None:
    """``FOLDER:path`` split in two, unless ``name`` is a file that exists here."""
    folder, colon, path = name.partition(":")
    if not colon or not folder or os.path.lexists(name):
        return None
    return Place(folder, path.strip("/"))


def _looks_local(name: str) -> bool:
    return os.path.lexists(name) or "/" in name or os.sep in name or "." in name


def _spellings(path: str) -> list[str]:
    """The absolute path as written and with symbolic links resolved."""
    written = os.path.abspath(os.path.expanduser(path))
    real = os.path.realpath(written)
    return [written] if real == written else [written, real]


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` as a POSIX path ("" for the root itself), or None."""
    try:
        relative = os.path.relpath(path, root)
    except ValueError:  # another drive, on Windows
        return None
    if relative == os.curdir:
        return ""
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return PurePosixPath(*relative.split(os.sep)).as_posix()
