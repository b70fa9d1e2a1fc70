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
    """True when a running process works in ``git_dir`` (its environment names it)."""
    needle = b"GIT_DIR=" + os.fsencode(git_dir) + b"\0"
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # cannot prove the lock stale: leave it
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                return True
        except OSError:
            continue
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
        self._observer = None
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
        )
        self.recorder.open(holder_alive=lambda: git_process_alive(git_dir))
        self.recorder.recover_outbox()
        self.sender = Sender(
            client=self.client,
            folder=folder,
            outbox=self.outbox,
            repo=GitRepo(git_dir, self.root),
            stop=self.stop_event,
            retry_max_seconds=self.settings.retry_max_seconds,
        )
        self.sender.start()
        self._threads.append(self.sender)
        # Watch first, then reconcile: an edit made during the reconcile is still seen.
        handler = FolderEvents(self.root, self.dirty, rules, attributor)
        self._observer, self.mode = start_observer(
            self.root, handler, poll=self.poll, poll_seconds=self.settings.poll_seconds
        )
        self._alarm = OverflowAlarm(self.request_rescan)
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(self._alarm)
        started = time.monotonic()
        self.recorder.record(None, busy=self.dirty.busy())
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
        if self.recorder is not None:
            self.recorder.repo.release()
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

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
                not len(self.dirty)
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
        tick = max(settings.settle_seconds / 4, 0.005)
        next_rescan = time.monotonic() + settings.rescan_seconds
        while not self.stop_event.is_set():
            self.dirty.wakeup.wait(timeout=tick if len(self.dirty) else 1.0)
            self.dirty.wakeup.clear()
            if self.stop_event.is_set():
                return
            try:
                now = time.monotonic()
                if self.rescan_requested.is_set() or now >= next_rescan:
                    self.rescan_requested.clear()
                    next_rescan = now + settings.rescan_seconds
                    retry = self.recorder.record(None, busy=self.dirty.busy())
                else:
                    settled = self.dirty.take_settled(
                        settle=settings.settle_seconds,
                        delete_grace=settings.delete_grace_seconds,
                        open_writer=settings.open_writer_seconds,
                        exists=lambda p: os.path.lexists(self.root / p),
                    )
                    if not settled:
                        continue
                    retry = self.recorder.record(settled)
                for path in retry:
                    self.dirty.touch(path)
            except Exception:
                # The worker must survive anything one batch throws; a rescan repairs it.
                log.exception("recording failed; the folder will be rescanned")
                self.stop_event.wait(1.0)
                self.rescan_requested.set()
