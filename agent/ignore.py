"""Which names in a shared folder are not documents, and what editors' lock files tell.

Editors leave temporary, lock and owner files beside the documents they edit. They are
never recorded, but a lock file names the person who opened the document, which is the
best author hint a shared folder offers once the file owner says nothing useful.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

__all__ = ["BUILTIN_PATTERNS", "IgnoreRules", "lock_target", "parse_lock_owner"]

# fnmatch patterns matched against each path component's name.
BUILTIN_PATTERNS: tuple[str, ...] = (
    # Microsoft Office: owner files, Word's temporary copies, Excel/PowerPoint temps.
    "~$*",
    "~WRD*.tmp",
    "~WRL*.tmp",
    "~WRA*.tmp",
    "~RF*.TMP",
    "~DF*.TMP",
    "ppt*.tmp",
    # LibreOffice: lock files and save temporaries.
    ".~lock.*#",
    "lu*.tmp",
    # Generic editor leftovers.
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "*.tmp",
    "*.part",
    "*.crdownload",
    ".goutputstream-*",
    # Operating-system litter.
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "ehthumbs.db",
    "desktop.ini",
    "$RECYCLE.BIN",
    ".Trash-*",
    ".fuse_hidden*",
    ".nfs*",
    # Version-control and Officium's own folders, should a share contain them.
    ".git",
    ".officium",
)

_OFFICE_OWNER = re.compile(r"^~\$(?P<rest>.+)$")
_LIBRE_LOCK = re.compile(r"^\.~lock\.(?P<name>.+)#$")


class IgnoreRules:
    """Built-in patterns plus configured ones, matched against every path component."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.patterns = tuple(BUILTIN_PATTERNS) + tuple(p for p in extra if p)
        self._regex = re.compile(
            "|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in self.patterns)
        )

    def ignores(self, relative: str) -> bool:
        """True when any component of ``relative`` (a POSIX path) is ignored."""
        return any(self._regex.match(part) for part in PurePosixPath(relative).parts)

    def git_exclude(self) -> str:
        """The same rules in gitignore syntax, for the repository's info/exclude."""
        lines = ["# Written by the Officium agent; edits are overwritten."]
        for pattern in self.patterns:
            escaped = pattern.replace("#", "\\#") if pattern.startswith("#") else pattern
            lines.append(escaped)
        return "\n".join(lines) + "\n"


def lock_target(name: str, siblings: Iterable[str] = ()) -> str | None:
    """The document a lock/owner file stands for, or None if ``name`` is not one.

    Word shortens long names in its owner file (``~$`` replaces the first two characters
    when the name is long), so the sibling ending with the rest of the name is chosen.
    """
    match = _LIBRE_LOCK.match(name)
    if match:
        return match.group("name")
    match = _OFFICE_OWNER.match(name)
    if not match:
        return None
    rest = match.group("rest")
    candidates = [s for s in siblings if s.endswith(rest) and not s.startswith("~$")]
    if not candidates:
        return rest
    return min(candidates, key=len)


def parse_lock_owner(name: str, data: bytes) -> str | None:
    """The user name an editor wrote into its lock/owner file, if any.

    LibreOffice writes CSV: ``,user name,host,date,profile dir;``. Microsoft Office writes
    a length byte and the user name, padded (also as UTF-16 at offset 54 in newer files).
    """
    if _LIBRE_LOCK.match(name):
        text = data.decode("utf-8", "replace").strip()
        fields = text.split(",")
        if len(fields) >= 2 and fields[1].strip():
            return fields[1].strip()
        return None
    if _OFFICE_OWNER.match(name) and data:
        length = data[0]
        if 0 < length < len(data):
            ascii_name = data[1 : 1 + length].decode("latin-1", "replace").strip()
            if ascii_name.isprintable() and ascii_name:
                return ascii_name
    return None
