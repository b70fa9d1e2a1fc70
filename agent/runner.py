"""One agent per folder: registration, start-up reconcile, watching, recording, sending."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from agent.attribution import Attributor
from agent.gitrepo import GitRepo
from agent.ignore import IgnoreRules
from agent.outbox import Outbox
from agent.recorder import Recorder
from agent.sender import Sender
from agent.settings import AgentSettings
from agent.watch import DirtyPaths, FolderEvents, OverflowAlarm, start_observer
from clients.sdk import OfficiumClient
from core.errors import Conflict, OfficiumError

__all__ = ["AgentAlreadyRunning", "FolderAgent", "git_process_alive"]

log = logging.getLogger("officium.agent")
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


class AgentAlreadyRunning(OfficiumError):
    """Another agent holds this folder's state directory."""

    kind = "conflict"
    title = "Agent already running"


def state_dir_for(base: Path, root: Path) -> Path:
    """The state directory of one watched folder: readable name plus a hash of its path."""
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:12]
    return base / f"{root.name or 'root'}-{digest}"


def git_process_alive(git_dir: Path) -> bool:
    """True when a running process works in ``git_dir`` (its environment names it).

    The sender's ``git cat-file`` readers are not counted: they only read objects and
    never take a lock.
    """
    needle = b"GIT_DIR=" + os.fsencode(git_dir) + b"\0"
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # cannot prove the lock stale: leave it
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes():
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].endswith(b"git") and argv[1] == b"cat-file":
            continue
        return True
    return False


class FolderAgent:
    """Watches one folder until stopped."""

    def __init__(
        self,
        root: Path,
        *,
        settings: AgentSettings,
        client: OfficiumClient,
        name: str | None = None,
        poll: bool = False,
    ) -> None:
        self.root = root.resolve()
        self.settings = settings
        self.admin_client = client
        self.name = name or self.root.name
        self.poll = poll
        self.state = state_dir_for(settings.state_dir.resolve(), self.root)
        self.stop_event = threading.Event()
        self.dirty = DirtyPaths()
        self.rescan_requested = threading.Event()
        self.mode = "not started"
        self._lock_handle = None
        self._threads: list[threading.Thread] = []
        self._working = False
        self._observer = None
        self._handler: FolderEvents | None = None
        self._watched: tuple[int, int] | None = None
        self._alarm: OverflowAlarm | None = None
        self.client: OfficiumClient | None = None
        self.recorder: Recorder | None = None
        self.sender: Sender | None = None
        self.outbox: Outbox | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Register, reconcile what changed while down, then watch."""
        if not self.root.is_dir():
            raise OfficiumError(f"{self.root} is not a folder")
        self.state.mkdir(parents=True, exist_ok=True)
        self._take_instance_lock()
        try:
            self._start()
        except BaseException:
            self.stop(drain_seconds=0)  # release the lock and whatever was started
            raise

    def _start(self) -> None:
        folder, self.client = self._credentials()
        rules = IgnoreRules(self.settings.ignore)
        attributor = Attributor(self.settings.authors_file)
        self.outbox = Outbox(self.state / "outbox.db")
        git_dir = self.state / "repo.git"
        self.recorder = Recorder(
            root=self.root,
            repo=GitRepo(git_dir, self.root),
            outbox=self.outbox,
            attributor=attributor,
            rules=rules,
            max_file_bytes=self.settings.max_file_bytes,
            holder_alive=lambda: git_process_alive(git_dir),
        )
        self.recorder.open()
        self.recorder.recover_outbox()
        self.sender = Sender(
            client=self.client,
            folder=folder,
            outbox=self.outbox,
            repo=GitRepo(git_dir, self.root, objects_only=True),
            stop=self.stop_event,
            retry_max_seconds=self.settings.retry_max_seconds,
            tag_seconds=self.settings.tag_seconds,
        )
        self.sender.start()
        self._threads.append(self.sender)
        # Watch first, then reconcile: an edit made during the reconcile is still seen.
        self._handler = FolderEvents(self.root, self.dirty, rules, attributor)
        self._watch()
        self._alarm = OverflowAlarm(self.request_rescan)
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(self._alarm)
        started = time.monotonic()
        try:
            self.recorder.record(None, busy=self.dirty.busy())
        except Exception:
            # The record loop retries (a lock held by a live git process, say).
            log.exception("the start-up reconcile failed; it will be retried")
            self.rescan_requested.set()
        log.info(
            "watching %s as folder '%s' (%s); start-up reconcile took %.2f s",
            self.root,
            folder,
            self.mode,
            time.monotonic() - started,
        )
        loop = threading.Thread(
            target=self._record_loop, name=f"officium-recorder-{folder}", daemon=True
        )
        loop.start()
        self._threads.append(loop)

    def stop(self, *, drain_seconds: float = 5.0) -> None:
        """Stop watching; give the sender a moment to empty the outbox; release the lock."""
        if self._lock_handle is None:
            return  # never started, or already stopped
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._alarm is not None:
            for name in _WATCHDOG_LOGGERS:
                logging.getLogger(name).removeHandler(self._alarm)
        if self.sender is not None and self.outbox is not None:
            deadline = time.monotonic() + drain_seconds
            while self.outbox.pending_count() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.stop_event.set()
        self.dirty.wakeup.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._observer is not None and self._observer.is_alive():
            # The record loop may have started a new watcher meanwhile (folder replaced).
            self._observer.stop()
            self._observer.join(timeout=5)
        if self.recorder is not None:
            self.recorder.repo.release()
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _watch(self) -> None:
        """Start (or restart) the observer on the folder as it is now."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        self._observer, self.mode = start_observer(
            self.root, self._handler, poll=self.poll, poll_seconds=self.settings.poll_seconds
        )
        info = os.stat(self.root)
        self._watched = (info.st_dev, info.st_ino)

    def _check_watched_folder(self) -> None:
        """Watch the folder again if it was replaced (a new directory at the same path)."""
        try:
            info = os.stat(self.root)
        except OSError:
            return  # gone: the recorder pauses until it is back
        if (info.st_dev, info.st_ino) != self._watched:
            log.warning("folder %s was replaced; watching the new one and rescanning", self.root)
        elif not self._observer.is_alive():
            log.warning("the watcher of %s stopped; starting it again and rescanning", self.root)
        else:
            return
        self._watch()
        self.request_rescan()

    def _watching_the_folder(self) -> bool:
        """False when the folder was replaced and the observer is not watching it yet."""
        try:
            info = os.stat(self.root)
        except OSError:
            return True  # gone: nothing to watch until it is back
        return (info.st_dev, info.st_ino) == self._watched

    def request_rescan(self) -> None:
        """Rescan the whole folder soon (after an inotify overflow, say)."""
        log.warning("rescanning %s: watcher events may have been lost", self.root)
        self.rescan_requested.set()
        self.dirty.wakeup.set()

    def wait_idle(self, timeout: float, *, quiet: float = 0.3) -> bool:
        """Wait until nothing has been dirty, pending or unsent for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            idle = (
                not self._working
                and self._watching_the_folder()
                and not len(self.dirty)
                and not self.rescan_requested.is_set()
                and self.outbox.pending_count() == 0
                and self.sender.idle.is_set()
            )
            now = time.monotonic()
            if not idle:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= quiet:
                return True
            time.sleep(0.01)
        return False

    # ---------------------------------------------------------------- internals

    def _take_instance_lock(self) -> None:
        handle = open(self.state / "agent.lock", "a+")  # noqa: SIM115 (held while running)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AgentAlreadyRunning(
                f"another Officium agent is already watching {self.root} "
                f"(its state is in {self.state}); stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def _credentials(self) -> tuple[str, OfficiumClient]:
        """This folder's name and an agent client, registering the folder the first time."""
        saved = self.state / "agent.json"
        if saved.exists():
            data = json.loads(saved.read_text())
            return data["folder"], self.admin_client.with_token(data["token"])
        me = self.admin_client.me()
        if me.kind == "agent":
            return me.folder, self.admin_client
        folders = {folder.name: folder for folder in self.admin_client.list_folders()}
        existing = folders.get(self.name)
        if existing is None:
            self.admin_client.create_folder(name=self.name, root=str(self.root))
            log.info("registered folder '%s' at %s", self.name, self.root)
        elif existing.root != str(self.root):
            raise Conflict(
                f"the server already has a folder '{self.name}' at {existing.root}; "
                f"give this one another name with --name"
            )
        created = self.admin_client.create_token(
            folder=self.name, label=f"agent on {socket.gethostname()}"
        )
        fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"folder": self.name, "token": created.token}, handle)
        return self.name, self.admin_client.with_token(created.token)

    def _record_loop(self) -> None:
        settings = self.settings
        next_rescan = time.monotonic() + settings.rescan_seconds
        next_folder_check = 0.0
        failures = 0
        last_failure = None
        while not self.stop_event.is_set():
            settle = settings.settle_seconds
            if self.mode == "polling":
                # Between two polls nothing is seen: quiet must outlast a poll interval.
                settle += 2 * settings.poll_seconds
            tick = max(settle / 4, 0.005)
            self.dirty.wakeup.wait(timeout=tick if len(self.dirty) else 1.0)
            self.dirty.wakeup.clear()
            if self.stop_event.is_set():
                return
            # Paths taken out of the dirty set are in the worker's hands until committed.
            self._working = True
            try:
                now = time.monotonic()
                if now >= next_folder_check:
                    next_folder_check = now + 0.5
                    self._check_watched_folder()
                if self.rescan_requested.is_set() or now >= next_rescan:
                    self.rescan_requested.clear()
                    next_rescan = now + settings.rescan_seconds
                    retry = self.recorder.record(None, busy=self.dirty.busy())
                else:
                    settled, moves = self.dirty.take_settled(
                        settle=settle,
                        delete_grace=max(settings.delete_grace_seconds, settle),
                        open_writer=settings.open_writer_seconds,
                        exists=lambda p: os.path.lexists(self.root / p),
                    )
                    if not settled:
                        continue
                    try:
                        retry = self.recorder.record(settled, moves=moves, busy=self.dirty.busy())
                    except Exception:
                        for path in settled:
                            self.dirty.touch(path)
                        raise
                for path in retry:
                    self.dirty.touch(path)
                failures, last_failure = 0, None
            except Exception as exc:
                # The worker must survive anything one batch throws; a rescan repairs it.
                failures += 1
                if str(exc) != last_failure:
                    log.exception("recording failed; the folder will be rescanned")
                    last_failure = str(exc)
                self.stop_event.wait(min(0.5 * 2 ** min(failures - 1, 4), 5.0))
                try:
                    self.recorder.repair()
                    self.recorder.recover_outbox()
                except Exception:
                    log.exception("cannot repair the repository yet")
                self.rescan_requested.set()
            finally:
                self._working = False
