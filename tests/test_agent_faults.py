"""The agent under stress and faults: bursts, lost events, crashes, outages, locks.

Nothing may be lost and nothing recorded twice. Each test waits for the agent to be
idle (or for the server to hold what it should) and then asserts the outcome.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, sha

FAST = {"settle_seconds": 0.05, "delete_grace_seconds": 0.4}
OFFICIUM = Path(sys.executable).with_name("officium")


def _documents(client, folder="share"):
    return {d.path: d for d in client.iter_documents(folder=folder)}


def _git(agent, *args):
    return subprocess.run(
        ["git", f"--git-dir={agent.state / 'repo.git'}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _wait_for(condition, timeout, what):
    """Poll ``condition`` until it holds; fail with ``what`` otherwise (no timing asserted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


# ---------------------------------------------------------------- bursts, overflow


def test_a_burst_of_1000_files_is_recorded_once_each_in_few_commits(share, start_agent, live_admin):
    agent = start_agent(share, **FAST)
    for n in range(1000):
        (share / f"f{n:04}.txt").write_bytes(b"burst file %d" % n)
    assert agent.wait_idle(60)

    documents = _documents(live_admin)
    assert len(documents) == 1000
    assert all(d.latest.number == 1 and not d.deleted for d in documents.values())
    assert documents["f0500.txt"].latest.sha256 == sha(b"burst file 500")
    tracked = _git(agent, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert len(tracked) == 1000
    commits = int(_git(agent, "rev-list", "--count", "HEAD"))
    assert commits <= 100


def _blind(agent) -> None:
    """From now on no event reaches the agent (its watcher keeps running, watching nothing)."""
    agent._observer.unschedule_all()


@pytest.mark.parametrize(
    ("logger", "message"),
    [
        ("watchdog.observers.inotify_c", "Inotify queue overflowed; filesystem events were lost"),
        # What watchdog 7 itself logs when the kernel's queue overflows.
        (
            "watchdog.observers.inotify",
            "Inotify queue overflowed; reconciling recursive watches below '/share'",
        ),
    ],
)
def test_an_inotify_overflow_makes_the_agent_rescan(
    share, start_agent, live_admin, caplog, logger, message
):
    agent = start_agent(share, **FAST)
    (share / "seen.txt").write_bytes(b"seen by the watcher")
    assert agent.wait_idle(10)
    _blind(agent)  # events lost: nothing reaches the agent while these files change
    (share / "missed.txt").write_bytes(b"never announced")
    (share / "seen.txt").write_bytes(b"changed unannounced")
    assert agent.wait_idle(5)
    assert set(_documents(live_admin)) == {"seen.txt"}

    caplog.set_level(logging.WARNING)
    logging.getLogger(logger).warning(message)
    assert agent.wait_idle(10)
    documents = _documents(live_admin)
    assert set(documents) == {"seen.txt", "missed.txt"}
    assert documents["seen.txt"].latest.sha256 == sha(b"changed unannounced")
    assert documents["missed.txt"].latest.sha256 == sha(b"never announced")
    assert "rescanning" in caplog.text


def test_a_periodic_rescan_catches_what_no_event_announced(share, start_agent, live_admin):
    agent = start_agent(share, rescan_seconds=0.5, **FAST)
    _blind(agent)
    (share / "quiet.txt").write_bytes(b"no event for this one")
    _wait_for(lambda: "quiet.txt" in _documents(live_admin), 15, "the periodic rescan")
    assert agent.wait_idle(10)
    assert _documents(live_admin)["quiet.txt"].latest.number == 1


# ------------------------------------------------------------------ kill -9


def _pending(state: Path) -> int:
    """Reports waiting in the outbox of an agent running in another process."""
    import sqlite3

    (outbox,) = state.glob("*/outbox.db")
    with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM pending").fetchone()[0]


def _agent_process(folder: Path, server: str, state: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "OFFICIUM_AGENT_SETTLE_SECONDS": "0.05",
        "OFFICIUM_AGENT_DELETE_GRACE_SECONDS": "0.4",
        "OFFICIUM_AGENT_RETRY_MAX_SECONDS": "1",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                str(OFFICIUM),
                "agent",
                str(folder),
                "--server",
                server,
                "--token",
                ADMIN_TOKEN,
                "--state-dir",
                str(state),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def test_kill_9_mid_burst_then_restart_loses_nothing_and_records_nothing_twice(
    share, live_server, live_admin, tmp_path
):
    state = tmp_path / "agent-state"
    log = tmp_path / "agent.log"
    process = _agent_process(share, live_server, state, log)
    try:
        _wait_for(
            lambda: "start-up reconcile took" in log.read_text(),
            30,
            f"the agent to register the folder and start watching (log: {log})",
        )
        for n in range(150):
            (share / f"doc{n:03}.txt").write_bytes(b"document %d" % n)
        # Wait until it is busy recording, then kill it without warning.
        _wait_for(lambda: list(live_admin.iter_documents(folder="share")), 30, "first reports")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        for n in range(150, 300):
            (share / f"doc{n:03}.txt").write_bytes(b"document %d" % n)

        process = _agent_process(share, live_server, state, log)
        _wait_for(lambda: len(_documents(live_admin)) >= 300, 60, f"all 300 documents (log: {log})")
        # Everything it committed is sent: a duplicate would be on the server by now.
        _wait_for(lambda: _pending(state) == 0, 30, "the outbox to drain")
        documents = _documents(live_admin)
        assert len(documents) == 300
        for n in range(300):
            document = documents[f"doc{n:03}.txt"]
            assert document.latest.number == 1
            assert document.latest.sha256 == sha(b"document %d" % n)
            assert len(live_admin.versions(document.id)) == 1
        assert live_admin.audit_verify().ok
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    assert process.returncode == 0, log.read_text()


def test_a_crash_between_commit_and_outbox_is_repaired_from_the_commit_message(
    share, start_agent, live_admin, monkeypatch
):
    from agent.outbox import Outbox

    agent = start_agent(share, **FAST)
    real_enqueue = Outbox.enqueue
    failures = []

    def enqueue_once_failing(self, commit, reports):
        if not failures:
            failures.append(commit)
            raise OSError("disk full (simulated) right after the commit")
        return real_enqueue(self, commit, reports)

    monkeypatch.setattr(Outbox, "enqueue", enqueue_once_failing)
    (share / "committed.txt").write_bytes(b"in git, not yet in the outbox")
    assert agent.wait_idle(15)
    assert failures, "the simulated crash did not happen"
    assert failures[0] in _git(agent, "rev-list", "HEAD")
    document = live_admin.lookup("share", "committed.txt")
    assert [v.sha256 for v in live_admin.versions(document.id)] == [
        sha(b"in git, not yet in the outbox")
    ]


def test_a_commit_missing_from_the_outbox_is_reported_after_a_restart(
    share, start_agent, live_admin, monkeypatch
):
    """The process died between the commit and the outbox write: the restart repairs it."""
    from agent.outbox import Outbox

    agent = start_agent(share, **FAST)
    (share / "first.txt").write_bytes(b"first")
    assert agent.wait_idle(10)
    # The outbox write never happens, as if the process died right after the commit.
    monkeypatch.setattr(Outbox, "enqueue", lambda self, commit, reports: None)
    (share / "lost.txt").write_bytes(b"committed, then the process died")
    _wait_for(lambda: "lost.txt" in _git(agent, "log", "-1", "--format=%B"), 10, "the commit")
    agent.stop(drain_seconds=0)
    monkeypatch.undo()
    assert "lost.txt" not in _documents(live_admin)

    agent = start_agent(share, **FAST)
    assert agent.wait_idle(10)
    documents = _documents(live_admin)
    assert set(documents) == {"first.txt", "lost.txt"}
    assert documents["lost.txt"].latest.number == 1


# ------------------------------------------------------------------ server down


class RestartableServer:
    """The app on a fixed loopback port, stopped and started again on the same database."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.port = 0
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import uvicorn

        from server.app import create_app

        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="test-uvicorn", daemon=True)
        self._thread.start()
        while not self._server.started:
            assert self._thread.is_alive(), "the test server did not start"
            self._thread.join(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None


@pytest.fixture
def restartable(settings):
    server = RestartableServer(settings)
    server.start()
    yield server
    server.stop()


def test_edits_while_the_server_is_down_are_all_reported_once_it_is_back(
    share, restartable, tmp_path
):
    from agent.runner import FolderAgent
    from agent.settings import AgentSettings
    from clients.sdk import OfficiumClient

    (share / "kept.txt").write_bytes(b"v1")
    (share / "doomed.txt").write_bytes(b"to be deleted while the server is down")
    with OfficiumClient(restartable.url, ADMIN_TOKEN) as client:
        agent = FolderAgent(
            share,
            settings=AgentSettings(
                state_dir=tmp_path / "agent-state", retry_max_seconds=0.5, **FAST
            ),
            client=client,
        )
        agent.start()
        try:
            assert agent.wait_idle(10)
            restartable.stop()

            def then(edit, pending):
                edit()
                _wait_for(lambda: agent.outbox.pending_count() >= pending, 10, "a local commit")

            then(lambda: (share / "kept.txt").write_bytes(b"v2"), 1)
            then(lambda: (share / "new.txt").write_bytes(b"created while the server is down"), 2)
            then(lambda: (share / "doomed.txt").unlink(), 3)
            then(lambda: os.rename(share / "kept.txt", share / "renamed.txt"), 4)
            then(lambda: (share / "renamed.txt").write_bytes(b"v3"), 5)
            assert not agent.wait_idle(1.0)  # the outbox cannot drain without the server

            restartable.start()
            assert agent.wait_idle(20)
            documents = _documents(client)
            assert set(documents) == {"renamed.txt", "new.txt", "doomed.txt"}
            assert documents["doomed.txt"].deleted
            renamed = documents["renamed.txt"]
            assert [v.sha256 for v in client.versions(renamed.id)] == [
                sha(b"v1"),
                sha(b"v2"),
                sha(b"v3"),
            ]
            assert documents["new.txt"].latest.number == 1
            assert client.audit_verify().ok
        finally:
            agent.stop(drain_seconds=0)


# ------------------------------------------------------------- agent stopped


def test_a_watcher_that_died_is_started_again(share, start_agent, live_admin, caplog):
    caplog.set_level(logging.WARNING, logger="officium.agent")
    agent = start_agent(share, **FAST)
    agent._observer.stop()
    agent._observer.join(5)
    (share / "unseen.txt").write_bytes(b"written while no watcher ran")
    _wait_for(lambda: "watcher of" in caplog.text, 10, "the agent to notice")
    assert agent.wait_idle(10)
    (share / "seen-again.txt").write_bytes(b"seen by the new watcher")
    assert agent.wait_idle(10)
    assert set(_documents(live_admin)) == {"unseen.txt", "seen-again.txt"}


def test_deletions_and_renames_while_the_agent_was_stopped(share, start_agent, live_admin):
    (share / "stays.txt").write_bytes(b"stays")
    (share / "deleted.txt").write_bytes(b"deleted while down")
    (share / "old-name.txt").write_bytes(b"renamed while down")
    (share / "folder").mkdir()
    (share / "folder" / "inner.txt").write_bytes(b"moved with its folder")
    agent = start_agent(share, **FAST)
    assert agent.wait_idle(10)
    ids = {path: d.id for path, d in _documents(live_admin).items()}
    agent.stop()

    (share / "deleted.txt").unlink()
    os.rename(share / "old-name.txt", share / "new-name.txt")
    os.rename(share / "folder", share / "moved-folder")
    (share / "stays.txt").write_bytes(b"stays, edited")

    agent = start_agent(share, **FAST)
    assert agent.wait_idle(10)
    documents = _documents(live_admin)
    assert documents["deleted.txt"].deleted
    assert documents["new-name.txt"].id == ids["old-name.txt"]
    assert documents["moved-folder/inner.txt"].id == ids["folder/inner.txt"]
    assert "old-name.txt" not in documents and "folder/inner.txt" not in documents
    assert documents["stays.txt"].latest.number == 2
    assert documents["new-name.txt"].latest.number == 1


def test_a_move_into_a_new_folder_keeps_the_document(share, start_agent, live_admin):
    """inotify may report such a move as a creation and, later, a deletion."""
    agent = start_agent(share, **FAST)
    for n in range(5):
        (share / f"m{n}.txt").write_bytes(b"movable %d" % n)
    assert agent.wait_idle(10)
    before = {path: d.id for path, d in _documents(live_admin).items()}
    for n in range(5):
        target = share / f"new{n}"
        target.mkdir()
        os.rename(share / f"m{n}.txt", target / f"m{n}.txt")
    assert agent.wait_idle(10, quiet=1.0)
    after = _documents(live_admin)
    assert set(after) == {f"new{n}/m{n}.txt" for n in range(5)}
    for n in range(5):
        assert after[f"new{n}/m{n}.txt"].id == before[f"m{n}.txt"]


# ----------------------------------------------------------------- index.lock


def test_a_stale_index_lock_is_removed_at_start(share, start_agent, live_admin, caplog):
    agent = start_agent(share, **FAST)
    (share / "before.txt").write_bytes(b"before the crash")
    assert agent.wait_idle(10)
    agent.stop()
    lock = agent.state / "repo.git" / "index.lock"
    lock.write_bytes(b"")  # left by a git command killed mid-way

    caplog.set_level(logging.WARNING, logger="officium.agent")
    agent = start_agent(share, **FAST)
    assert not lock.exists()
    assert "removed stale index.lock" in caplog.text
    (share / "after.txt").write_bytes(b"after the crash")
    assert agent.wait_idle(10)
    assert set(_documents(live_admin)) == {"before.txt", "after.txt"}


def test_an_index_lock_held_by_a_live_process_is_left_alone(share, start_agent, live_admin, caplog):
    agent = start_agent(share, **FAST)
    (share / "before.txt").write_bytes(b"before")
    assert agent.wait_idle(10)
    agent.stop()
    git_dir = agent.state / "repo.git"
    lock = git_dir / "index.lock"
    lock.write_bytes(b"")
    holder = subprocess.Popen(["sleep", "60"], env={**os.environ, "GIT_DIR": str(git_dir)})
    try:
        caplog.set_level(logging.WARNING, logger="officium.agent")
        agent = start_agent(share, **FAST)
        (share / "during.txt").write_bytes(b"written while git is busy")
        assert not agent.wait_idle(1.0)
        assert lock.exists()
        assert "index.lock in" in caplog.text and "held by a running git process" in caplog.text
        assert "during.txt" not in _documents(live_admin)
    finally:
        holder.kill()
        holder.wait()
    # Its holder gone, the lock is stale: the agent clears it and catches up.
    assert agent.wait_idle(20)
    assert not lock.exists()
    assert set(_documents(live_admin)) == {"before.txt", "during.txt"}


# --------------------------------------------------------- folder disappears


def test_a_folder_that_goes_away_and_comes_back(share, start_agent, live_admin, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="officium.agent")
    agent = start_agent(share, rescan_seconds=0.3, **FAST)
    for name in ("a.txt", "b.txt", "c.txt"):
        (share / name).write_bytes(name.encode())
    assert agent.wait_idle(10)

    away = tmp_path / "away"
    os.rename(share, away)
    (away / "a.txt").write_bytes(b"edited while away")
    (away / "c.txt").unlink()
    # Several rescans and delete graces pass: nothing may be taken for a deletion.
    time.sleep(1.5)
    assert not any(d.deleted for d in _documents(live_admin).values())
    assert "is not there" in caplog.text

    os.rename(away, share)
    (share / "d.txt").write_bytes(b"after the return")
    assert agent.wait_idle(15)
    documents = _documents(live_admin)
    assert set(documents) == {"a.txt", "b.txt", "c.txt", "d.txt"}
    assert documents["a.txt"].latest.sha256 == sha(b"edited while away")
    assert documents["c.txt"].deleted
    assert not documents["b.txt"].deleted
    assert "is back" in caplog.text


def test_a_folder_replaced_by_another_is_watched_again(share, start_agent, live_admin, tmp_path):
    agent = start_agent(share, **FAST)
    (share / "a.txt").write_bytes(b"original")
    (share / "b.txt").write_bytes(b"b")
    assert agent.wait_idle(10)

    replacement = tmp_path / "restored-from-backup"
    replacement.mkdir()
    (replacement / "a.txt").write_bytes(b"from the backup")
    (replacement / "b.txt").write_bytes(b"b")
    os.rename(share, tmp_path / "old-share")
    os.rename(replacement, share)
    assert agent.wait_idle(10)
    (share / "new.txt").write_bytes(b"written into the new folder")
    assert agent.wait_idle(10)
    documents = _documents(live_admin)
    assert set(documents) == {"a.txt", "b.txt", "new.txt"}
    assert documents["a.txt"].latest.sha256 == sha(b"from the backup")
    assert not any(d.deleted for d in documents.values())


def test_a_second_agent_process_is_refused_with_a_clear_message(
    share, start_agent, live_server, tmp_path
):
    agent = start_agent(share, **FAST)
    result = subprocess.run(
        [
            str(OFFICIUM),
            "agent",
            str(share),
            "--server",
            live_server,
            "--token",
            ADMIN_TOKEN,
            "--state-dir",
            str(tmp_path / "agent-state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "already watching" in result.stderr
    assert "Traceback" not in result.stderr
    assert agent.wait_idle(5)
