"""The content store: every version's exact bytes, filed under their SHA-256.

Uploads stream to a temporary file while being hashed, are fsynced, and are renamed
into place only if the bytes match the claimed hash, so a reader never sees a partial
or wrong object and a crash leaves at most a stray temporary file. The store is plain
files so several server replicas can share it on one network volume.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from core.errors import Invalid, TooLarge
from core.schemas import ContentStored

__all__ = ["ContentStore"]


def _human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    raise AssertionError("unreachable")


class ContentStore:
    """Files addressed by SHA-256 under one root directory."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._objects = root / "objects"
        self._objects_text = str(self._objects)
        self._tmp = root / "tmp"

    def prepare(self) -> None:
        """Create the store's directories."""
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        """Where the object with this hash lives (whether or not it is there)."""
        return self._objects / sha256[:2] / sha256[2:4] / sha256

    def file_for(self, sha256: str) -> str:
        """:meth:`path_for` as a string, built without pathlib (exports ask it per version)."""
        return os.path.join(self._objects_text, sha256[:2], sha256[2:4], sha256)

    def size_of(self, sha256: str) -> int | None:
        """The stored object's size, or None when it is not stored."""
        try:
            return self.path_for(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def has(self, sha256: str) -> bool:
        return self.size_of(sha256) is not None

    def is_writable(self) -> bool:
        """True when a temporary file can be created in the store."""
        try:
            with tempfile.TemporaryFile(dir=self._tmp):
                return True
        except OSError:
            return False

    def limit_message(self, size: int | None = None) -> str:
        got = f"{_human(size)} is" if size is not None else "the upload is"
        return f"{got} over this server's upload limit of {_human(self.max_bytes)}"

    async def receive(
        self, sha256: str, chunks: AsyncIterator[bytes], *, declared_size: int | None
    ) -> ContentStored:
        """Store a stream whose SHA-256 must be ``sha256``; idempotent for known content."""
        if declared_size is not None and declared_size > self.max_bytes:
            raise TooLarge(self.limit_message(declared_size))
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLarge(self.limit_message())
                    digest.update(chunk)
                    out.write(chunk)
                if digest.hexdigest() != sha256:
                    raise Invalid(
                        f"the uploaded bytes hash to {digest.hexdigest()}, not to the claimed "
                        f"{sha256}; nothing was kept"
                    )
                if declared_size is not None and size != declared_size:
                    raise Invalid(f"received {size} bytes but Content-Length said {declared_size}")
                if self.has(sha256):
                    return ContentStored(sha256=sha256, size=size, created=False)
                await anyio.to_thread.run_sync(_sync_and_close, out)
            await anyio.to_thread.run_sync(self._install, tmp, sha256)
            return ContentStored(sha256=sha256, size=size, created=True)
        finally:
            tmp.unlink(missing_ok=True)

    def _install(self, tmp: Path, sha256: str) -> None:
        target = self.path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)


def _sync_and_close(out) -> None:
    out.flush()
    os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
