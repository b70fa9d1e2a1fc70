"""Settled paths become git commits and durable version reports.

The recorder is the agent's one serial git worker. It looks at each settled path (or
the whole folder on a rescan) and refuses what must not be recorded (symbolic links,
oversized files, names that are not UTF-8) before git reads a byte of it; stages the
rest; drops what was still being written; pairs a vanished path with a new path holding
the same bytes as a rename; commits one commit per author; and writes the commit's
reports to the outbox. Every commit message carries its reports as JSON lines, so the
outbox can always be rebuilt from the git history.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.attribution import Attribution, Attributor
from agent.gitrepo import GitRepo, StagedChange, is_regular_file_mode
from agent.ignore import IgnoreRules
from agent.outbox import Outbox
from agent.progress import ImportProgress
from core.errors import Invalid
from core.paths import normalise_path

__all__ = ["REPORT_TRAILER", "Recorder", "reports_in_message"]

log = logging.getLogger("officium.agent")

# Imports of this many files or more are staged in chunks, with progress shown.
_PROGRESS_FROM = 2000
_STAGE_CHUNK = 1000
REPORT_TRAILER = "Officium-Report: "
# A file modified this close to (or after) the start of staging may be mid-write.
_UNSTABLE_NS = 20_000_000


def reports_in_message(message: str) -> list[dict]:
    """The reports a commit message carries."""
    return [
        json.loads(line[len(REPORT_TRAILER) :])
        for line in message.splitlines()
        if line.startswith(REPORT_TRAILER)
    ]


@dataclass(frozen=True, slots=True)
class _Change:
    kind: str  # created | modified | renamed | deleted
    entries: tuple[StagedChange, ...]
    path: str
    from_path: str | None
    blob: str | None
    attribution: Attribution


class Recorder:
    """Commits a folder's settled changes and queues their reports."""

    def __init__(
        self,
        *,
        root: Path,
        repo: GitRepo,
        outbox: Outbox,
        attributor: Attributor,
        rules: IgnoreRules,
        max_file_bytes: int,
        holder_alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.root = root
        self.repo = repo
        self.outbox = outbox
        self.attributor = attributor
        self.rules = rules
        self.max_file_bytes = max_file_bytes
        self.holder_alive = holder_alive
        self.oversized: dict[str, int] = {}
        self._refused_names: set[str] = set()
        self._unreadable: set[str] = set()
        self._root_identity: tuple[int, int] | None = None
        self._root_missing_logged = False
        self._came_back = False

    # ------------------------------------------------------------------ start

    def open(self) -> None:
        """Prepare the repository and remember which device the folder lives on."""
        # A crash can leave git's locks behind (even config.lock, which ensure() needs).
        self.repo.remove_stale_locks(holder_alive=self.holder_alive)
        self.repo.ensure(exclude=self.rules.git_exclude())
        info = os.stat(self.root)
        self._root_identity = (info.st_dev, info.st_ino)

    def repair(self) -> None:
        """After a failed batch: clear git locks that are provably stale."""
        self.repo.remove_stale_locks(holder_alive=self.holder_alive)

    def recover_outbox(self) -> int:
        """Queue the reports of commits made but not yet queued (a crash in between)."""
        reported = self.outbox.get("reported_commit")
        recovered = 0
        for commit in self.repo.commits_after(reported):
            if self.outbox.has(commit):
                continue
            reports = reports_in_message(self.repo.message(commit))
            self.outbox.enqueue(commit, reports)
            recovered += 1
        if recovered:
            log.info("recovered %d commit(s) whose reports were not yet queued", recovered)
        return recovered

    # ----------------------------------------------------------------- record

    def root_present(self) -> bool:
        """False while the folder is gone or another filesystem sits there (unmounted)."""
        try:
            info = os.stat(self.root)
        except OSError:
            present = False
        else:
            present = stat.S_ISDIR(info.st_mode) and (
                self._root_identity is None or info.st_dev == self._root_identity[0]
            )
        if not present and not self._root_missing_logged:
            log.warning(
                "folder %s is not there (unmounted share?); recording paused until it returns",
                self.root,
            )
            self._root_missing_logged = True
        elif present and self._root_missing_logged:
            log.warning("folder %s is back; rescanning it", self.root)
            self._root_missing_logged = False
            self._came_back = True
        return present

    def record(
        self,
        paths: list[str] | None,
        *,
        busy: Set[str] = frozenset(),
        moves: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Commit the folder's current state of ``paths`` (None: everything).

        Returns the paths to look at again later (still changing, or caught mid-way).
        ``busy`` names paths that are not yet settled: a change to them is left for later.
        ``moves`` are the renames the watcher saw (destination -> source): a new file
        that was renamed from a vanished one keeps its document, even if its bytes
        changed on the way.
        """
        if not self.root_present():
            return list(paths or [])
        if self._came_back:
            # Whatever happened while it was away fired no event here: look at it all.
            self._came_back = False
            paths = None
        if paths is not None and "" in paths:
            paths = None
        retry: list[str] = []
        files, gone = self._choose(paths, busy)
        started_ns = time.time_ns()
        self.repo.stage_removal(gone)
        unreadable = self._stage(files)
        self._unreadable -= set(files)
        for name in unreadable:
            self._cannot_read(name)
        staged = self.repo.staged()
        if not staged:
            return retry
        if not self.root_present():
            # Gone while git looked at it: what git saw may be an empty mount point.
            self.repo.unstage([e.path for e in staged])
            return list(paths or []) + retry
        keep, drop = self._screen(staged, started_ns, busy=busy)
        # Busy paths are still in the watcher's hands; refused ones stay refused.
        retry.extend(
            e.path for e in drop if e.path not in self._refused_names and e.path not in busy
        )
        self.repo.unstage([e.path for e in drop])
        if keep:
            keep.extend(self._vanished_sources(keep, staged))
            self._commit(keep, moves or {})
        return retry

    def _stage(self, files: list[str]) -> list[str]:
        """Stage files; a large import goes in chunks, with progress shown."""
        if len(files) < _PROGRESS_FROM:
            return self.repo.stage(files)
        sizes = [_size(self.root / path) for path in files]
        progress = ImportProgress("importing", files=len(files), size=sum(sizes))
        unreadable: list[str] = []
        try:
            for start in range(0, len(files), _STAGE_CHUNK):
                chunk = files[start : start + _STAGE_CHUNK]
                unreadable += self.repo.stage(chunk)
                progress.advance(len(chunk), sum(sizes[start : start + _STAGE_CHUNK]))
        finally:
            progress.close()
        return unreadable

    # ---------------------------------------------------------- choose paths

    def _choose(self, paths: list[str] | None, busy: Set[str]) -> tuple[list[str], list[str]]:
        """The files to stage for ``paths`` (None: the whole folder), each looked at
        first, and the tracked files gone from under them.

        Folders are expanded through git (new files under them, tracked files changed or
        gone); symbolic links, oversized files and names the register cannot hold are
        refused here, before git reads a byte of them. What git finds under a folder is
        left alone while ``busy`` (not yet settled).
        """
        chosen: list[str] = []
        gone: list[str] = []
        expand: list[str] | None = None if paths is None else []
        folders = paths is None
        linked: dict[str, bool] = {}
        for path in paths or ():
            if not self._recordable(path):
                continue
            info = None if self._behind_link(path, linked) else self._lstat(path)
            if info is False:
                continue
            if info is None or stat.S_ISLNK(info.st_mode):
                # Gone, or a link now: git knows what was recorded there (a file, a folder).
                expand.append(path)
            elif stat.S_ISDIR(info.st_mode):
                expand.append(path)
                folders = True
            elif self._admit(path, info):
                chosen.append(path)
        if expand is None or expand:
            tracked = []
            for change in self.repo.worktree_changes(expand):
                if change.path in busy or not self._recordable(change.path):
                    continue
                if change.status == "D":
                    gone.append(change.path)
                else:
                    tracked.append(change.path)
            untracked = self.repo.untracked(expand) if folders else []
            for path, was_tracked in [(p, True) for p in tracked] + [(p, False) for p in untracked]:
                if path in busy or not self._recordable(path):
                    continue
                info = None if self._behind_link(path, linked) else self._lstat(path)
                if info is None:
                    gone.append(path)  # vanished just now
                elif info is False:
                    continue
                elif self._admit(path, info):
                    chosen.append(path)
                elif was_tracked and stat.S_ISLNK(info.st_mode):
                    gone.append(path)  # the recorded file was replaced by a link
        return sorted(set(chosen)), sorted(set(gone))

    def _recordable(self, path: str) -> bool:
        return not self.rules.ignores(path) and self._name_ok(path)

    def _behind_link(self, path: str, linked: dict[str, bool]) -> bool:
        """True when a folder on the way to ``path`` is a symbolic link: what it points
        at is not in the share, so the path counts as gone and is never read."""
        parent = path.rpartition("/")[0]
        while parent:
            if parent not in linked:
                try:
                    linked[parent] = stat.S_ISLNK((self.root / parent).lstat().st_mode)
                except OSError:
                    linked[parent] = False
            if linked[parent]:
                return True
            parent = parent.rpartition("/")[0]
        return False

    def _lstat(self, path: str) -> os.stat_result | bool | None:
        """The path's lstat; None when it is gone; False when it cannot be looked at."""
        try:
            return (self.root / path).lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            log.warning("cannot look at %s: %s", path, exc.strerror)
            return False

    def _admit(self, path: str, info: os.stat_result) -> bool:
        """True for a regular file within the size limit; logs (once) what is refused."""
        if stat.S_ISLNK(info.st_mode):
            if path not in self._refused_names:
                log.warning("%s is a symbolic link: not followed and not recorded", _shown(path))
                self._refused_names.add(path)
            return False
        if not stat.S_ISREG(info.st_mode):
            return False  # sockets, pipes, devices: not documents
        if info.st_size > self.max_file_bytes:
            if self.oversized.get(path) != info.st_size:
                log.warning(
                    "%s is %d bytes, over the agent's limit of %d: not recorded",
                    _shown(path),
                    info.st_size,
                    self.max_file_bytes,
                )
                self.oversized[path] = info.st_size
            return False
        self.oversized.pop(path, None)
        self._refused_names.discard(path)
        if not os.access(self.root / path, os.R_OK):
            self._cannot_read(path)
            return False
        return True

    def _cannot_read(self, path: str) -> None:
        if path not in self._unreadable:
            log.warning("cannot read %s: not recorded until it changes", _shown(path))
            self._unreadable.add(path)

    def _name_ok(self, path: str) -> bool:
        """Names the register cannot hold (not UTF-8, control characters, '\\') are refused."""
        try:
            normalise_path(path)
        except Invalid as exc:
            if path not in self._refused_names:
                log.warning("%s cannot be recorded: %s; rename it", _shown(path), exc.detail)
                self._refused_names.add(path)
            return False
        return True

    # ---------------------------------------------------------- screen staged

    def _screen(
        self, staged: list[StagedChange], started_ns: int, *, busy: Set[str]
    ) -> tuple[list[StagedChange], list[StagedChange]]:
        keep, drop = [], []
        for entry in staged:
            if entry.path in busy or not self._name_ok(entry.path):
                drop.append(entry)
                continue
            if entry.new_blob is None:
                keep.append(entry)
                continue
            if not is_regular_file_mode(entry.new_mode):
                if entry.path not in self._refused_names:
                    log.warning("%s is a symbolic link or submodule: not recorded", entry.path)
                    self._refused_names.add(entry.path)
                drop.append(entry)
                continue
            try:
                info = (self.root / entry.path).lstat()
            except OSError:
                drop.append(entry)  # vanished after staging: look again
                continue
            if info.st_mtime_ns >= started_ns - _UNSTABLE_NS:
                drop.append(entry)  # written while (or just before) git read it
                continue
            if not self._admit(entry.path, info):
                drop.append(entry)  # grew over the limit after it was chosen
                continue
            keep.append(entry)
        return keep, drop

    def _vanished_sources(
        self, keep: list[StagedChange], staged: list[StagedChange]
    ) -> list[StagedChange]:
        """Tracked files gone from the folder whose bytes a new file of this batch holds.

        The watcher does not always pair a move (a file moved into a folder created a
        moment before is reported as a creation, and its source only as a deletion half
        a second later); the folder itself says it was a rename.
        """
        new_blobs = {e.new_blob for e in keep if e.status == "A" and e.new_blob}
        if not new_blobs:
            return []
        known = {e.path for e in staged}
        sources = [
            change
            for change in self.repo.worktree_changes(None)
            if change.status == "D"
            and change.old_blob in new_blobs
            and change.path not in known
            and not self.rules.ignores(change.path)
        ]
        if not sources:
            return []
        self.repo.stage_removal([s.path for s in sources])
        return [StagedChange("D", s.path, s.old_blob, None, None) for s in sources]

    # ----------------------------------------------------------------- commit

    def _commit(self, entries: list[StagedChange], moves: Mapping[str, str]) -> None:
        hashes = self.repo.blob_sha256(e.new_blob for e in entries if e.new_blob)
        changes = self._changes(entries, moves)
        observed = datetime.now(UTC).isoformat()
        by_author: dict[tuple[str | None, str | None], list[_Change]] = defaultdict(list)
        for change in changes:
            key = (change.attribution.author, change.attribution.hint)
            by_author[key].append(change)
        for group in by_author.values():
            reports = [self._report(change, hashes, observed) for change in group]
            attribution = group[0].attribution
            commit = self.repo.commit_entries(
                [entry for change in group for entry in change.entries],
                message=_message(reports),
                author_name=attribution.git_name,
                author_email=f"{attribution.git_name}@officium.invalid",
            )
            self.outbox.enqueue(commit, reports)
        log.info("recorded %d change(s): %s", len(changes), _summary(changes))

    def _changes(self, entries: list[StagedChange], moves: Mapping[str, str]) -> list[_Change]:
        deleted = {e.path: e for e in entries if e.status == "D"}
        added = sorted((e for e in entries if e.status == "A"), key=lambda e: e.path)
        sources: dict[str, StagedChange] = {}  # new path -> the vanished path it came from
        for entry in added:
            source = _move_source(entry.path, moves, deleted)
            if source is not None and source not in sources.values():
                sources[entry.path] = source
        by_blob: dict[str, list[StagedChange]] = defaultdict(list)
        used = {source.path for source in sources.values()}
        for entry in deleted.values():
            if entry.path not in used and entry.old_blob:
                by_blob[entry.old_blob].append(entry)
        for entry in added:
            if entry.path not in sources and by_blob.get(entry.new_blob or ""):
                sources[entry.path] = by_blob[entry.new_blob].pop(0)
        paired = {source.path for source in sources.values()}

        changes: list[_Change] = []
        for entry in sorted(entries, key=lambda e: e.path):
            if entry.status == "D":
                continue
            attribution = self.attributor.attribute(entry.path, _owner(self.root / entry.path))
            source = sources.get(entry.path)
            if source is not None:
                changes.append(
                    _Change(
                        "renamed",
                        (source, entry),
                        entry.path,
                        source.path,
                        entry.new_blob,
                        attribution,
                    )
                )
                continue
            kind = "created" if entry.status == "A" else "modified"
            changes.append(_Change(kind, (entry,), entry.path, None, entry.new_blob, attribution))
        for entry in entries:
            if entry.status == "D" and entry.path not in paired:
                attribution = self.attributor.attribute(entry.path, None)
                changes.append(_Change("deleted", (entry,), entry.path, None, None, attribution))
        return changes

    @staticmethod
    def _report(change: _Change, hashes: dict[str, tuple[str, int]], observed: str) -> dict:
        report = {
            "kind": change.kind,
            "path": change.path,
            "from_path": change.from_path,
            "author": change.attribution.author,
            "author_hint": change.attribution.hint,
            "observed_at": observed,
            "blob": change.blob,
            "sha256": None,
            "size": None,
        }
        if change.blob:
            report["sha256"], report["size"] = hashes[change.blob]
        return report


def _move_source(
    path: str, moves: Mapping[str, str], deleted: Mapping[str, StagedChange]
) -> StagedChange | None:
    """The vanished file ``path`` was renamed from, following a chain of renames."""
    seen = {path}
    while path in moves:
        path = moves[path]
        if path in deleted:
            return deleted[path]
        if path in seen:
            return None
        seen.add(path)
    return None


def _shown(path: str) -> str:
    """A path as it can be printed: bytes that are not UTF-8 shown as \\xNN."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _owner(path: Path) -> int | None:
    try:
        return path.lstat().st_uid
    except OSError:
        return None


def _message(reports: list[dict]) -> str:
    lines = [f"officium: {len(reports)} change(s)", ""]
    for report in reports:
        if report["kind"] == "renamed":
            lines.append(f"renamed {report['from_path']} -> {report['path']}")
        else:
            lines.append(f"{report['kind']} {report['path']}")
    lines.append("")
    lines.extend(REPORT_TRAILER + json.dumps(report, sort_keys=True) for report in reports)
    return "\n".join(lines) + "\n"


def _summary(changes: list[_Change]) -> str:
    shown = ", ".join(
        f"renamed {c.from_path} -> {c.path}" if c.from_path else f"{c.kind} {c.path}"
        for c in changes[:5]
    )
    return shown + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
