"""Filesystem events as hints: which paths changed lately, and when they have settled.

Events are never replayed. A path is only marked dirty with the time of its last event;
the recorder later compares the folder itself with the last commit. A path is settled
once it has been quiet for the settle interval and is not open for writing (inotify's
close-after-write says when a writer is done); a vanished path gets a longer grace, as
editors' saves move the original away for a moment. Paths linked by a move settle
together, so a rename is seen as one.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from agent.attribution import Attributor
from agent.ignore import IgnoreRules, lock_target, parse_lock_owner

__all__ = ["DirtyPaths", "FolderEvents", "OverflowAlarm", "start_observer"]

log = logging.getLogger("officium.agent")
_LOCK_READ_LIMIT = 4096


@dataclass
class _Entry:
    last: float
    writing: bool = False
    moved_away: bool = False
    partners: set[str] = field(default_factory=set)


class DirtyPaths:
    """Paths with recent events; thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.wakeup = threading.Event()

    def touch(
        self,
        path: str,
        *,
        writing: bool | None = None,
        moved_away: bool = False,
        now: float | None = None,
    ) -> None:
        """``path`` had an event now (``moved_away``: it was renamed to a kept name)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry(last=now)
            entry.last = now
            entry.moved_away = moved_away
            if writing is not None:
                entry.writing = writing
        self.wakeup.set()

    def closed(self, path: str, now: float | None = None) -> None:
        """A writer closed ``path``: it may settle after the quiet interval."""
        self.touch(path, writing=False, now=now)

    def link(self, a: str, b: str) -> None:
        """``a`` moved to ``b``: they settle together."""
        with self._lock:
            for one, other in ((a, b), (b, a)):
                entry = self._entries.setdefault(one, _Entry(last=time.monotonic()))
                entry.partners.add(other)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def busy(self) -> set[str]:
        """Paths not yet settled (a rescan must leave them alone)."""
        with self._lock:
            return set(self._entries)

    def take_settled(
        self,
        *,
        settle: float,
        delete_grace: float,
        open_writer: float,
        exists: Callable[[str], bool],
        now: float | None = None,
    ) -> list[str]:
        """Remove and return every settled path (with all the paths moved with it)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ready = {
                path
                for path, entry in self._entries.items()
                if self._is_ready(path, entry, now, settle, delete_grace, open_writer, exists)
            }
            taken: list[str] = []
            seen: set[str] = set()
            for path in sorted(ready):
                if path in seen:
                    continue
                group = self._group(path)
                seen |= group
                if group <= ready:
                    taken.extend(sorted(group))
            for path in taken:
                del self._entries[path]
            return taken

    def _group(self, path: str) -> set[str]:
        group, todo = set(), [path]
        while todo:
            current = todo.pop()
            if current in group:
                continue
            group.add(current)
            entry = self._entries.get(current)
            if entry:
                todo.extend(entry.partners)
        return group

    @staticmethod
    def _is_ready(path, entry, now, settle, delete_grace, open_writer, exists) -> bool:
        quiet = now - entry.last
        if entry.writing:
            return quiet >= open_writer
        if quiet < settle:
            return False
        # A path renamed to a kept name has no reason to come back; any other vanished
        # path gets the grace (Word moves the original to ~WRL*.tmp while saving).
        return quiet >= delete_grace or entry.moved_away or exists(path)


class FolderEvents(FileSystemEventHandler):
    """Turns watchdog's events under one folder into dirty paths and lock-file hints."""

    def __init__(
        self, root: Path, dirty: DirtyPaths, rules: IgnoreRules, attributor: Attributor
    ) -> None:
        self.root = root
        self.root_text = os.fsdecode(root)
        self.dirty = dirty
        self.rules = rules
        self.attributor = attributor

    def _relative(self, path: str | bytes) -> str | None:
        text = os.fsdecode(path)
        if text == self.root_text:
            return ""
        prefix = self.root_text.rstrip("/") + "/"
        return text[len(prefix) :] if text.startswith(prefix) else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        # A directory's "modified" only echoes its entries' own events.
        if isinstance(event, FileOpenedEvent | FileClosedNoWriteEvent | DirModifiedEvent):
            return
        source = self._relative(event.src_path)
        if source is None:
            return
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            destination = self._relative(event.dest_path)
            self._moved(source, destination)
            return
        if not source:
            if event.event_type == "deleted":
                self.dirty.touch("")  # the folder itself went: the recorder pauses
            return
        if self.rules.ignores(source):
            self._maybe_lock_file(source, event)
            return
        if isinstance(event, FileClosedEvent):
            self.dirty.closed(source)
        elif event.event_type == "modified" and not event.is_directory:
            self.dirty.touch(source, writing=True)
        else:
            self.dirty.touch(source)

    def _moved(self, source: str, destination: str | None) -> None:
        source_kept = bool(source) and not self.rules.ignores(source)
        dest_kept = bool(destination) and not self.rules.ignores(destination)
        if source_kept:
            self.dirty.touch(source, moved_away=dest_kept)
        if dest_kept:
            self.dirty.touch(destination)
        if source_kept and dest_kept:
            self.dirty.link(source, destination)

    def _maybe_lock_file(self, relative: str, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "modified", "closed"):
            return
        directory, _, name = relative.rpartition("/")
        full = self.root / relative
        try:
            siblings = os.listdir(full.parent) if name.startswith("~$") else ()
        except OSError:
            siblings = ()
        target = lock_target(name, siblings)
        if target is None:
            return
        try:
            with open(full, "rb") as handle:
                data = handle.read(_LOCK_READ_LIMIT)
        except OSError:
            return
        document = f"{directory}/{target}" if directory else target
        self.attributor.saw_lock(document, parse_lock_owner(name, data))


class OverflowAlarm(logging.Handler):
    """Watchdog only logs an inotify queue overflow; this turns that log line into a rescan."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


_WATCH_LIMIT_ERRORS = {errno.ENOSPC, errno.EMFILE, errno.ENFILE}


def start_observer(root: Path, handler: FolderEvents, *, poll: bool, poll_seconds: float):
    """Start watching ``root`` recursively; fall back to polling if inotify runs out."""
    if not poll:
        observer = Observer()
        try:
            observer.schedule(handler, os.fsdecode(root), recursive=True)
            observer.start()
            return observer, "inotify"
        except OSError as exc:
            observer.stop()
            if exc.errno not in _WATCH_LIMIT_ERRORS:
                raise
            log.warning(
                "cannot watch %s with inotify (%s: the watch or instance limit is reached; "
                "raise fs.inotify.max_user_watches); polling it every %.1f s instead",
                root,
                exc.strerror,
                poll_seconds,
            )
    observer = PollingObserver(timeout=poll_seconds)
    observer.schedule(handler, os.fsdecode(root), recursive=True)
    observer.start()
    return observer, "polling"
