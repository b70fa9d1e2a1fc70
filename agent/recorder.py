"""Settled paths become git commits and durable version reports.

The recorder is the agent's one serial git worker. It stages what the folder holds now
for the settled paths (or the whole folder on a rescan), drops what must not be
recorded (symlinks, oversized files, names that are not UTF-8, files still being
written), pairs a vanished path with a new path holding the same bytes as a rename,
commits one commit per author, and writes the commit's reports to the outbox. Every
commit message carries its reports as JSON lines, so the outbox can always be rebuilt
from the git history.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.attribution import Attribution, Attributor
from agent.gitrepo import GitRepo, StagedChange, is_regular_file_mode
from agent.ignore import IgnoreRules
from agent.outbox import Outbox
from core.errors import Invalid
from core.paths import normalise_path

__all__ = ["REPORT_TRAILER", "Recorder", "reports_in_message"]

log = logging.getLogger("officium.agent")

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
    ) -> None:
        self.root = root
        self.repo = repo
        self.outbox = outbox
        self.attributor = attributor
        self.rules = rules
        self.max_file_bytes = max_file_bytes
        self.tracked: set[str] = set()
        self.oversized: set[str] = set()
        self._refused_names: set[str] = set()
        self._root_identity: tuple[int, int] | None = None
        self._root_missing_logged = False

    # ------------------------------------------------------------------ start

    def open(self, *, holder_alive) -> None:
        """Prepare the repository and remember which device the folder lives on."""
        self.repo.ensure(exclude=self._exclude())
        self.repo.remove_stale_lock(holder_alive=holder_alive)
        self.tracked = self.repo.tracked()
        info = os.stat(self.root)
        self._root_identity = (info.st_dev, info.st_ino)

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
        return present

    def record(self, paths: list[str] | None, *, busy: set[str] = frozenset()) -> list[str]:
        """Commit the folder's current state of ``paths`` (None: everything).

        Returns the paths to look at again later (still changing or unreadable).
        ``busy`` names paths a whole-folder scan must leave alone (not yet settled).
        """
        if not self.root_present():
            return list(paths or [])
        if paths is not None and "" in paths:
            paths = None
        retry: list[str] = []
        candidates = None if paths is None else self._candidates(paths)
        if candidates == []:
            return retry
        started_ns = time.time_ns()
        failed = self.repo.stage(candidates)
        for name in failed:
            log.warning("cannot read %s: it will be tried again", name)
        retry.extend(failed)
        staged = self.repo.staged()
        keep, drop = self._screen(staged, started_ns, busy=busy if paths is None else set())
        retry.extend(e.path for e in drop if e.path not in self._refused_names)
        self.repo.unstage([e.path for e in drop])
        if keep:
            self._commit(keep)
        return retry

    def _candidates(self, paths: list[str]) -> list[str]:
        chosen = []
        for path in paths:
            if self.rules.ignores(path):
                continue
            full = self.root / path
            try:
                info = full.lstat()
            except FileNotFoundError:
                info = None
            except OSError as exc:
                log.warning("cannot look at %s: %s", path, exc.strerror)
                continue
            if info is None:
                prefix = path + "/"
                if path in self.tracked or any(t.startswith(prefix) for t in self.tracked):
                    chosen.append(path)  # a recorded file or folder went away
                continue
            if stat.S_ISREG(info.st_mode) and info.st_size > self.max_file_bytes:
                self._refuse_oversized(path, info.st_size)
                continue
            if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or path in self.tracked:
                chosen.append(path)
            # Symlinks, sockets and devices are never followed nor recorded.
        return chosen

    def _refuse_oversized(self, path: str, size: int) -> None:
        if path not in self.oversized:
            log.warning(
                "%s is %d bytes, over the agent's limit of %d: not recorded",
                path,
                size,
                self.max_file_bytes,
            )
            self.oversized.add(path)
            self.repo.ensure(exclude=self._exclude())

    def _exclude(self) -> str:
        extra = "".join(f"/{_gitignore_literal(p)}\n" for p in sorted(self.oversized))
        return self.rules.git_exclude() + extra

    def _screen(
        self, staged: list[StagedChange], started_ns: int, *, busy: set[str]
    ) -> tuple[list[StagedChange], list[StagedChange]]:
        keep, drop = [], []
        for entry in staged:
            if entry.path in busy or self._refusable_name(entry.path):
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
            keep.append(entry)
        return keep, drop

    def _refusable_name(self, path: str) -> bool:
        """Names the register cannot hold (not UTF-8, control characters, '\\')."""
        try:
            normalise_path(path)
        except Invalid as exc:
            if path not in self._refused_names:
                log.warning("%r cannot be recorded: %s; rename it", path, exc.detail)
                self._refused_names.add(path)
            return True
        return False

    # ----------------------------------------------------------------- commit

    def _commit(self, entries: list[StagedChange]) -> None:
        hashes = self.repo.blob_sha256(e.new_blob for e in entries if e.new_blob)
        changes = self._changes(entries)
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
            for change in group:
                if change.kind == "deleted":
                    self.tracked.discard(change.path)
                else:
                    self.tracked.add(change.path)
                if change.from_path:
                    self.tracked.discard(change.from_path)
        log.info("recorded %d change(s): %s", len(changes), _summary(changes))

    def _changes(self, entries: list[StagedChange]) -> list[_Change]:
        deleted_by_blob: dict[str, list[StagedChange]] = defaultdict(list)
        for entry in entries:
            if entry.status == "D" and entry.old_blob:
                deleted_by_blob[entry.old_blob].append(entry)
        changes: list[_Change] = []
        paired: set[str] = set()
        for entry in sorted(entries, key=lambda e: e.path):
            if entry.status == "D":
                continue
            uid = _owner(self.root / entry.path)
            attribution = self.attributor.attribute(entry.path, uid)
            sources = deleted_by_blob.get(entry.new_blob or "", [])
            if entry.status == "A" and sources:
                source = sources.pop(0)
                paired.add(source.path)
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


def _gitignore_literal(path: str) -> str:
    special = set("\\*?[]!# ")
    return "".join("\\" + ch if ch in special else ch for ch in path)
