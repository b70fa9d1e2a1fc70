"""The folder's git history: the only module of the agent that runs git.

The repository's git dir lives in the agent's state directory and the shared folder is
its work tree, so the share never gets a ``.git``. Every command goes through
GitPython's ``Git`` (the git command line, which stays fast at 10,000+ files where the
pure-Python index API does not); object reads use GitPython's persistent ``cat-file``
processes, cleared after each batch so a long-running agent holds none.
All calls come from the agent's one serial git worker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import git

__all__ = ["EMPTY_TREE", "GitRepo", "StagedChange"]

log = logging.getLogger("officium.agent.git")

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_FILE_MODES = {"100644", "100755"}
_CHUNK = 1024 * 1024
_COMMITTER = ("Officium agent", "agent@officium.invalid")
_PRIVATE_INDEX = "officium-index-"
_PATHSPEC = "officium-pathspec-"


@dataclass(frozen=True, slots=True)
class StagedChange:
    """One path whose staged state differs from HEAD: A(dded), M(odified) or D(eleted)."""

    status: str
    path: str
    old_blob: str | None
    new_blob: str | None
    new_mode: str | None


class GitRepo:
    """A repository with its git dir apart from its work tree.

    ``objects_only`` is for a reader of blobs (the sender): its git processes run in the
    git dir, so they keep working while the share is away (unmounted).
    """

    def __init__(self, git_dir: Path, work_tree: Path, *, objects_only: bool = False) -> None:
        self.git_dir = git_dir
        self.work_tree = work_tree
        self._held_logged: str | None = None
        self.git = git.Git(str(git_dir if objects_only else work_tree))
        self.git.update_environment(
            GIT_DIR=str(git_dir),
            GIT_WORK_TREE=str(work_tree),
            # Names are literal: '[draft] plan.docx' must not be a glob.
            GIT_LITERAL_PATHSPECS="1",
            GIT_TERMINAL_PROMPT="0",
            # Neither the machine's nor the user's git settings (excludes files, hooks,
            # autocrlf ...) may change what the agent records.
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_COMMITTER_NAME=_COMMITTER[0],
            GIT_COMMITTER_EMAIL=_COMMITTER[1],
            LC_ALL="C",
        )

    # ------------------------------------------------------------------ set-up

    def ensure(self, *, exclude: str) -> None:
        """Create the repository if needed, apply Officium's settings and ignore rules."""
        if not (self.git_dir / "HEAD").exists():
            self.git_dir.mkdir(parents=True, exist_ok=True)
            self.git.execute(["git", "init", "--quiet", str(self.git_dir)])
        settings = {
            # Office files are already compressed: zlib on them only costs time.
            "core.looseCompression": "0",
            "core.compression": "1",
            "pack.compression": "1",
            "core.quotePath": "false",
            "core.autocrlf": "false",
            "core.fileMode": "true",
            "core.symlinks": "true",
            "core.bare": "false",
            "core.worktree": str(self.work_tree),
            "gc.auto": "0",
            "commit.gpgSign": "false",
            "advice.addIgnoredFile": "false",
            "index.skipHash": "false",
        }
        for key, value in settings.items():
            self.git.execute(["git", "config", key, value])
        info = self.git_dir / "info"
        info.mkdir(exist_ok=True)
        (info / "exclude").write_text(exclude, encoding="utf-8")

    def locks(self) -> list[Path]:
        """Git's lock files in the git dir (index, HEAD, refs, config) and the agent's own
        temporary files there, if any: all are left only by an interrupted command."""
        if not self.git_dir.is_dir():
            return []
        found = [
            self.git_dir / name
            for name in ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")
            if (self.git_dir / name).exists()
        ]
        refs = self.git_dir / "refs"
        if refs.is_dir():
            found.extend(sorted(refs.rglob("*.lock")))
        # The agent's own temporary files, left behind if it was killed mid-command.
        for prefix in (_PRIVATE_INDEX, _PATHSPEC):
            found.extend(sorted(self.git_dir.glob(prefix + "*")))
        return found

    def remove_stale_locks(self, *, holder_alive) -> list[Path]:
        """Remove git's lock files if no live process can own them; return those removed.

        The caller holds the agent's instance lock, so no other agent uses this
        repository; ``holder_alive()`` says whether a git process (left by an earlier run,
        or started by hand) could still be working in it, and then the locks are left
        alone: removing a live lock is how auto-committers corrupt their index.
        """
        locks = self.locks()
        if not locks:
            return []
        names = ", ".join(lock.name for lock in locks)
        if holder_alive():
            if names != self._held_logged:
                log.warning(
                    "%s in %s is held by a running git process; leaving it (recording "
                    "waits until that process ends)",
                    names,
                    self.git_dir,
                )
                self._held_logged = names
            return []
        self._held_logged = None
        for lock in locks:
            lock.unlink(missing_ok=True)
        log.warning(
            "removed stale %s left in %s by an interrupted git command", names, self.git_dir
        )
        return locks

    # ----------------------------------------------------------------- queries

    def head(self) -> str | None:
        """The commit HEAD points at, or None in a repository without commits."""
        status, out, _ = self.git.execute(
            ["git", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
            with_extended_output=True,
            with_exceptions=False,
            env={"GIT_OPTIONAL_LOCKS": "0"},
        )
        return out.strip() if status == 0 and out.strip() else None

    def commits_after(self, base: str | None) -> list[str]:
        """Commits reachable from HEAD and not from ``base``, oldest first."""
        if self.head() is None:
            return []
        spec = f"{base}..HEAD" if base else "HEAD"
        out = self.git.execute(
            ["git", "rev-list", "--reverse", spec], env={"GIT_OPTIONAL_LOCKS": "0"}
        )
        return [line for line in out.splitlines() if line]

    def message(self, commit: str) -> str:
        """A commit's full message."""
        return self.git.execute(
            ["git", "log", "-1", "--format=%B", commit],
            env={"GIT_OPTIONAL_LOCKS": "0"},
            strip_newline_in_stdout=False,
        )

    # ------------------------------------------------------------ work tree

    def worktree_changes(self, paths: Iterable[str] | None) -> list[StagedChange]:
        """Tracked files under ``paths`` (None: all) whose work-tree state differs from
        the index: M(odified), D(eleted) or T(ype changed); ``old_blob`` is the index's."""
        args = ["git", "diff-files", "--raw", "-z", "--abbrev=40"]
        changes: list[StagedChange] = []
        for chunk in _path_chunks(paths):
            out = self.git.execute(
                [*args, "--", *chunk], stdout_as_string=False, env={"GIT_OPTIONAL_LOCKS": "0"}
            )
            changes.extend(_parse_raw(out))
        return changes

    def untracked(self, paths: Iterable[str] | None) -> list[str]:
        """Files under ``paths`` (None: all) that git does not track, minus the ignored.

        Only the agent's own rules (info/exclude) apply: a ``.gitignore`` someone leaves
        in the share does not hide documents from the register.
        """
        args = [
            "git",
            "ls-files",
            "-z",
            "--others",
            f"--exclude-from={self.git_dir / 'info' / 'exclude'}",
        ]
        names: list[str] = []
        for chunk in _path_chunks(paths):
            out = self.git.execute(
                [*args, "--", *chunk], stdout_as_string=False, env={"GIT_OPTIONAL_LOCKS": "0"}
            )
            names.extend(os.fsdecode(name) for name in out.split(b"\0") if name)
        return names

    # ---------------------------------------------------------------- staging

    def stage(self, paths: Iterable[str]) -> list[str]:
        """Put the work tree's state of these files in the index; return the unreadable.

        Paths are files, never folders (the caller has looked at each); a missing one
        is removed from the index (or ignored if it was never there). A file git cannot
        read does not stop the others: it is left out and returned.
        """
        pending = list(paths)
        failed: list[str] = []
        while pending:
            data = b"".join(os.fsencode(p) + b"\0" for p in pending)
            process = self.git.execute(
                ["git", "update-index", "--add", "--remove", "--replace", "-z", "--stdin"],
                as_process=True,
                istream=subprocess.PIPE,
            )
            _out, err = process.proc.communicate(data)
            if process.proc.returncode == 0:
                break
            # e.g.: error: open("secret.docx"): Permission denied
            #       fatal: Unable to process path secret.docx
            text = os.fsdecode(err)
            bad = None
            for line in text.splitlines():
                if line.startswith("fatal: Unable to process path "):
                    bad = line[len("fatal: Unable to process path ") :]
            if bad is None or bad not in pending:
                raise git.GitCommandError(["git", "update-index"], process.proc.returncode, err)
            failed.append(bad)
            pending.remove(bad)
        return failed

    def stage_removal(self, paths: Iterable[str]) -> None:
        """Remove these files from the index (without looking at the work tree, so a path
        now behind a symbolic link is removed, not refused)."""
        data = b"".join(os.fsencode(p) + b"\0" for p in paths)
        if data:
            self._run_with_input(
                ["git", "update-index", "--force-remove", "-z", "--stdin"], data, {}
            )

    def unstage(self, paths: Iterable[str]) -> None:
        """Put the index entries of ``paths`` back to HEAD's."""
        paths = list(paths)
        if not paths:
            return
        with self._pathspec_file(paths) as spec:
            if self.head() is None:
                self.git.execute(
                    [
                        "git",
                        "rm",
                        "--cached",
                        "--quiet",
                        "--ignore-unmatch",
                        "-r",
                        f"--pathspec-from-file={spec}",
                        "--pathspec-file-nul",
                    ]
                )
            else:
                self.git.execute(
                    [
                        "git",
                        "reset",
                        "--quiet",
                        f"--pathspec-from-file={spec}",
                        "--pathspec-file-nul",
                        "HEAD",
                    ]
                )

    def staged(self) -> list[StagedChange]:
        """Every path whose index entry differs from HEAD's."""
        base = self.head() or EMPTY_TREE
        out = self.git.execute(
            ["git", "diff-index", "--cached", "--raw", "-z", "--no-renames", "--abbrev=40", base],
            stdout_as_string=False,
        )
        return list(_parse_raw(out))

    # ---------------------------------------------------------------- commits

    def commit_entries(
        self,
        entries: list[StagedChange],
        *,
        message: str,
        author_name: str,
        author_email: str,
    ) -> str:
        """Commit exactly ``entries`` on top of HEAD and move HEAD; return the commit id.

        A private temporary index is used, so a batch of changes by several authors
        becomes one commit per author while the main index keeps every staged entry.
        """
        parent = self.head()
        fd, index = tempfile.mkstemp(prefix=_PRIVATE_INDEX, dir=self.git_dir)
        os.close(fd)
        os.unlink(index)
        env = {"GIT_INDEX_FILE": index}
        try:
            if parent:
                self.git.execute(["git", "read-tree", parent], env=env)
            lines = []
            for entry in entries:
                if entry.new_blob is None:
                    lines.append(f"0 {'0' * 40}\t")
                else:
                    lines.append(f"{entry.new_mode} {entry.new_blob}\t")
            info = b"".join(
                line.encode() + os.fsencode(entry.path) + b"\0"
                for line, entry in zip(lines, entries, strict=True)
            )
            self._run_with_input(["git", "update-index", "-z", "--index-info"], info, env)
            tree = self.git.execute(["git", "write-tree"], env=env).strip()
        finally:
            if os.path.exists(index):
                os.unlink(index)
        args = ["git", "commit-tree", tree, "-F", "-"]
        if parent:
            args[3:3] = ["-p", parent]
        commit = self._run_with_input(
            args,
            message.encode("utf-8"),
            {"GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email},
        ).strip()
        self.git.execute(
            ["git", "update-ref", "-m", "officium: record", "HEAD", commit, parent or "0" * 40]
        )
        return commit

    def _run_with_input(self, args: list[str], data: bytes, env: dict[str, str]) -> str:
        process = self.git.execute(args, as_process=True, istream=subprocess.PIPE, env=env)
        out, err = process.proc.communicate(data)
        if process.proc.returncode != 0:
            raise git.GitCommandError(args, process.proc.returncode, err, out)
        return out.decode("utf-8")

    def tag(self, name: str, commit: str, *, message: str) -> None:
        """An annotated tag on ``commit`` (replacing one of the same name)."""
        self.git.execute(["git", "tag", "--force", "--annotate", "-m", message, name, commit])

    # ----------------------------------------------------------------- blobs

    def blob_sha256(self, blobs: Iterable[str]) -> dict[str, tuple[str, int]]:
        """SHA-256 and size of each blob, read back from the object store."""
        result = {}
        try:
            for blob in blobs:
                if blob in result:
                    continue
                digest = hashlib.sha256()
                size = 0
                for chunk in self.blob_chunks(blob):
                    digest.update(chunk)
                    size += len(chunk)
                result[blob] = (digest.hexdigest(), size)
        finally:
            self.release()
        return result

    def blob_chunks(self, blob: str) -> Iterator[bytes]:
        """The blob's bytes, streamed."""
        _sha, _kind, size, stream = self.git.stream_object_data(blob)
        remaining = size
        while remaining > 0:
            chunk = stream.read(min(_CHUNK, remaining))
            if not chunk:
                raise OSError(f"git object {blob} ended early")
            remaining -= len(chunk)
            yield chunk
        # Consume the trailing newline cat-file --batch prints after each object.
        stream.read()

    def release(self) -> None:
        """Stop the cat-file processes GitPython keeps between object reads."""
        self.git.clear_cache()

    # ---------------------------------------------------------------- helpers

    def _pathspec_file(self, paths: Iterable[str] | None) -> _PathspecFile:
        return _PathspecFile(paths, self.git_dir)


class _PathspecFile:
    """A NUL-separated pathspec file (names may be any bytes; none can be an option)."""

    def __init__(self, paths: Iterable[str] | None, directory: Path) -> None:
        self.paths = None if paths is None else list(paths)
        self.directory = directory
        self.name: str | None = None

    def __enter__(self) -> str | None:
        if self.paths is None:
            return None
        fd, self.name = tempfile.mkstemp(prefix=_PATHSPEC, dir=self.directory)
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"\0".join(os.fsencode(p) for p in self.paths))
        return self.name

    def __exit__(self, *_exc) -> None:
        if self.name:
            os.unlink(self.name)


def _path_chunks(paths: Iterable[str] | None) -> Iterator[list[str]]:
    """Paths as command-line arguments, a bounded number at a time (None: one empty
    chunk, meaning everything). Commands without ``--pathspec-from-file`` need this;
    GIT_LITERAL_PATHSPECS keeps every name literal and ``--`` keeps it from being an
    option."""
    if paths is None:
        yield []
        return
    chunk: list[str] = []
    size = 0
    for path in paths:
        chunk.append(path)
        size += len(os.fsencode(path)) + 1
        if len(chunk) >= 1000 or size >= 100_000:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _parse_raw(out: bytes) -> Iterator[StagedChange]:
    # Records: ":oldmode newmode oldsha newsha status\0path\0"
    fields = out.split(b"\0")
    index = 0
    while index + 1 < len(fields):
        meta = fields[index].decode("ascii")
        if not meta.startswith(":"):
            index += 1
            continue
        _old_mode, new_mode, old_sha, new_sha, status = meta[1:].split(" ")
        path = os.fsdecode(fields[index + 1])
        index += 2
        zero = "0" * 40
        yield StagedChange(
            status=status[0],
            path=path,
            old_blob=None if old_sha == zero else old_sha,
            new_blob=None if new_sha == zero else new_sha,
            new_mode=None if new_mode == "000000" else new_mode,
        )


def is_regular_file_mode(mode: str | None) -> bool:
    """True for git's regular-file modes (not symlinks, not submodules)."""
    return mode in _FILE_MODES
