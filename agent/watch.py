"""Filesystem events as hints: which paths changed lately, and when they have settled.

Events are never replayed. A path is only marked dirty with the time of its last event;
the recorder later compares the folder itself with the last commit. A path is settled
once it has been quiet for the settle interval and is not open for writing (inotify's
close-after-write says when a writer is done). Two kinds of path get a longer grace: a
vanished one, as editors' saves move the original away for a moment, and a file just
created whose writer has neither written nor closed it yet (it may be about to). Paths
linked by a move settle together, so a rename is seen as one.

The polling observer (network shares) reports no opens or closes, only what changed
between two polls: there a path must stay unchanged for longer than a poll interval.
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
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
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
    fresh: bool = False  # created, and its writer has not written or closed it yet
    moved_away: bool = False
    partners: set[str] = field(default_factory=set)
    moved_from: str | None = None  # the kept path last renamed to this one


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
        fresh: bool | None = None,
        moved_away: bool = False,
        now: float | None = None,
    ) -> None:
        """``path`` had an event now (``moved_away``: it was renamed to a kept name).

        ``writing`` and ``fresh`` change what is known of its writer; None keeps it.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry(last=now)
            entry.last = now
            entry.moved_away = moved_away
            if writing is not None:
                entry.writing = writing
            if fresh is not None:
                entry.fresh = fresh
        self.wakeup.set()

    def closed(self, path: str, now: float | None = None) -> None:
        """A writer closed ``path``: it may settle after the quiet interval."""
        self.touch(path, writing=False, fresh=False, now=now)

    def link(self, a: str, b: str) -> None:
        """``a`` moved to ``b``: they settle together, and ``b`` remembers where it was."""
        with self._lock:
            for one, other in ((a, b), (b, a)):
                entry = self._entries.setdefault(one, _Entry(last=time.monotonic()))
                entry.partners.add(other)
            self._entries[b].moved_from = a

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
    ) -> tuple[list[str], dict[str, str]]:
        """Remove and return every settled path (with all the paths moved with it), and
        the moves seen among them (destination -> source)."""
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
            moves = {}
            for path in taken:
                entry = self._entries.pop(path)
                if entry.moved_from is not None:
                    moves[path] = entry.moved_from
            return taken, moves

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
        if quiet >= delete_grace:
            return True
        if entry.fresh:
            return False  # created empty and still open, most likely: give it the grace
        # A path renamed to a kept name has no reason to come back; any other vanished
        # path gets the grace (Word moves the original to ~WRL*.tmp while saving).
        return entry.moved_away or exists(path)


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
        # inotify says when a writer closes a file; the polling observer cannot.
        self.closes_reported = True

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
        if event.is_directory or not self.closes_reported:
            self.dirty.touch(source)
        elif isinstance(event, FileClosedEvent):
            self.dirty.closed(source)
        elif event.event_type == "modified":
            self.dirty.touch(source, writing=True, fresh=False)
        elif event.event_type == "created":
            self.dirty.touch(source, fresh=True)
        else:  # deleted: whoever was writing it is done with this name
            self.dirty.touch(source, writing=False, fresh=False)

    def _moved(self, source: str, destination: str | None) -> None:
        source_kept = bool(source) and not self.rules.ignores(source)
        dest_kept = bool(destination) and not self.rules.ignores(destination)
        if source_kept:
            self.dirty.touch(source, writing=False, fresh=False, moved_away=dest_kept)
        if dest_kept:
            # A file is renamed into place once written (an atomic save).
            self.dirty.touch(destination, writing=False, fresh=False)
        if source_kept and dest_kept:
            self.dirty.link(source, destination)

    def _maybe_lock_file(self, relative: str, event: FileSystemEvent) -> None:
        directory, _, name = relative.rpartition("/")
        if event.event_type == "deleted":
            self.attributor.lock_released(relative)
            return
        if event.event_type not in ("created", "modified", "closed"):
            return
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
        self.attributor.saw_lock(document, parse_lock_owner(name, data), lock=relative)


class OverflowAlarm(logging.Handler):
    """Watchdog only logs an inotify queue overflow; this turns that log line into a rescan."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


_WATCH_LIMIT_ERRORS = {errno.ENOSPC, errno.EMFILE, errno.ENFILE}
# Only what can change a document. Reads (open, close without writing) are left out of
# the kernel's queue entirely: git reading 100,000 files would otherwise overflow it.
_WANTED = (
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
)


def start_observer(root: Path, handler: FolderEvents, *, poll: bool, poll_seconds: float):
    """Start watching ``root`` recursively; fall back to polling if inotify runs out."""
    if not poll:
        handler.closes_reported = True
        observer = Observer()
        try:
            observer.schedule(
                handler, os.fsdecode(root), recursive=True, event_filter=list(_WANTED)
            )
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
    handler.closes_reported = False
    observer = PollingObserver(timeout=poll_seconds)
    observer.schedule(handler, os.fsdecode(root), recursive=True)
    observer.start()
    return observer, "polling"
