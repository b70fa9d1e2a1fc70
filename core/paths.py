"""Paths of documents inside a watched folder: normalised, relative, confined."""

from __future__ import annotations

import re

from core.errors import Invalid

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "check_text", "normalise_path"]

# Filesystems cap a name at 255 bytes. A whole path is capped at 2,000 bytes of UTF-8 so
# that every index over paths fits PostgreSQL's btree entry limit (2,704 bytes).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 2000
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_text(value: str, *, what: str) -> str:
    """Refuse text that no database can store faithfully: NUL, controls, lone surrogates."""
    if "\x00" in value:
        raise Invalid(f"{what} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{what} is not valid UTF-8") from None
    return value


def normalise_path(raw: str, *, what: str = "path") -> str:
    """Return ``raw`` as a clean POSIX path relative to its folder, or raise ``Invalid``.

    Separators are ``/``; ``.`` and empty segments are dropped; ``..``, absolute paths,
    drive letters, NUL and control characters, and text that is not valid UTF-8 are
    refused, so that no recorded path can point outside its folder.
    """
    check_text(raw, what=what)
    if _CONTROL.search(raw):
        raise Invalid(f"{what} {raw!r} contains a control character")
    if "\\" in raw:
        raise Invalid(f"{what} {raw!r} uses '\\' as a separator; use '/'")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise Invalid(f"{what} {raw!r} is absolute; give it relative to its folder")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise Invalid(f"{what} {raw!r} climbs out of its folder with '..'")
    if not parts:
        raise Invalid(f"{what} {raw!r} names no file")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise Invalid(f"{what} has a name over {MAX_NAME_BYTES} bytes: {part[:40]!r}...")
    clean = "/".join(parts)
    if len(clean.encode("utf-8")) > MAX_PATH_BYTES:
        raise Invalid(f"{what} is longer than {MAX_PATH_BYTES} bytes of UTF-8")
    return clean
