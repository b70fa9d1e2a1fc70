"""The agent's durable memory: reports waiting to be sent, and how far it has reported.

Reports are written here (SQLite, WAL, synchronous=FULL) right after their git commit
and before anything is sent. The git history is the deeper truth: every commit message
carries its reports (see agent.recorder), so a crash between the commit and this write
is repaired at start by re-reading the commits after ``reported_commit``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outbox", "PendingCommit"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_id TEXT NOT NULL UNIQUE,
    reports TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    commit_id TEXT NOT NULL,
    reports TEXT NOT NULL,
    reason TEXT NOT NULL,
    refused_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""


@dataclass(frozen=True, slots=True)
class PendingCommit:
    """One commit's reports, as JSON-ready dicts (each with the blob to upload)."""

    commit: str
    reports: list[dict]


class Outbox:
    """SQLite in the state directory; safe to use from the recorder and sender threads."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.changed = threading.Condition()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def enqueue(self, commit: str, reports: list[dict]) -> None:
        """Persist a commit's reports (a second enqueue of the same commit is ignored)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO pending(commit_id, reports) VALUES (?, ?)",
                (commit, json.dumps(reports)),
            )
        with self.changed:
            self.changed.notify_all()

    def has(self, commit: str) -> bool:
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM pending WHERE commit_id = ?", (commit,)).fetchone()
                is not None
            )

    def peek(self, limit_reports: int) -> list[PendingCommit]:
        """The oldest pending commits, whole, up to about ``limit_reports`` reports."""
        with self._lock:
            rows = self._db.execute(
                "SELECT commit_id, reports FROM pending ORDER BY position LIMIT 200"
            ).fetchall()
        batch: list[PendingCommit] = []
        count = 0
        for commit, text in rows:
            reports = json.loads(text)
            if batch and count + len(reports) > limit_reports:
                break
            batch.append(PendingCommit(commit, reports))
            count += len(reports)
        return batch

    def done(self, commits: list[str]) -> None:
        """These commits are reported: drop them and move the reported mark, atomically."""
        if not commits:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM pending WHERE commit_id = ?", [(c,) for c in commits])
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('reported_commit', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (commits[-1],),
            )
            self._db.execute("COMMIT")

    def refuse(self, pending: PendingCommit, reason: str) -> None:
        """Set aside a commit the server refused for good, so it does not block the rest."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO refused(commit_id, reports, reason) VALUES (?, ?, ?)",
                (pending.commit, json.dumps(pending.reports), reason),
            )
            self._db.execute("DELETE FROM pending WHERE commit_id = ?", (pending.commit,))
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('reported_commit', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (pending.commit,),
            )
            self._db.execute("COMMIT")

    def pending_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM pending").fetchone()[0]
