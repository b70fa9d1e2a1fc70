"""How editors and people save, and what must (not) become a version.

Each test drives a real folder with real inotify (or polling), real git and the real
server over HTTP, then asserts what the register holds once the agent is idle.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

import pytest

from tests.conftest import sha

FAST = {"settle_seconds": 0.05, "delete_grace_seconds": 0.4}


def _documents(client, folder="share"):
    return {d.path: d for d in client.iter_documents(folder=folder)}


def _versions(client, path, folder="share"):
    return client.versions(client.lookup(folder, path).id)


def _actions(client, path, folder="share"):
    return [e.action for e in client.history(client.lookup(folder, path).id).events]


def test_libreoffice_save_yields_one_version_attributed_to_the_lock_owner(
    share, start_agent, live_admin
):
    agent = start_agent(share, **FAST)
    (share / "budget.ods").write_bytes(b"v1")
    assert agent.wait_idle(10)

    lock = share / ".~lock.budget.ods#"
    lock.write_bytes(b",Jane Doe,pc-jane,30.11.2026 10:12,file:///home/jane/.config/libreoffice/4;")
    # The lock lives for the whole editing session; the agent reads it while it exists.
    agent.wait_idle(10)
    temp = share / "lu123.tmp"
    temp.write_bytes(b"v2 saved by LibreOffice")
    os.rename(temp, share / "budget.ods")
    lock.unlink()
    assert agent.wait_idle(10)

    assert set(_documents(live_admin)) == {"budget.ods"}
    versions = _versions(live_admin, "budget.ods")
    assert [v.sha256 for v in versions] == [sha(b"v1"), sha(b"v2 saved by LibreOffice")]
    assert "Jane Doe" in (versions[-1].author_hint or "")


def test_word_save_yields_one_version_and_never_a_deletion(share, start_agent, live_admin):
    agent = start_agent(share, **FAST)
    (share / "letter.docx").write_bytes(b"word v1")
    assert agent.wait_idle(10)

    owner = share / "~$letter.docx"
    owner.write_bytes(bytes([8]) + b"Jane Doe" + b"\0" * 45)
    (share / "~WRD0001.tmp").write_bytes(b"word v2")
    os.rename(share / "letter.docx", share / "~WRL0001.tmp")
    os.rename(share / "~WRD0001.tmp", share / "letter.docx")
    (share / "~WRL0001.tmp").unlink()
    owner.unlink()
    assert agent.wait_idle(10)

    assert set(_documents(live_admin)) == {"letter.docx"}
    versions = _versions(live_admin, "letter.docx")
    assert [v.sha256 for v in versions] == [sha(b"word v1"), sha(b"word v2")]
    actions = _actions(live_admin, "letter.docx")
    assert "document.deleted" not in actions
    assert "document.reappeared" not in actions


def test_word_save_with_pauses_longer_than_the_settle_interval(share, start_agent, live_admin):
    """Word's steps are not instantaneous: the original stays away for a moment."""
    agent = start_agent(share, settle_seconds=0.05, delete_grace_seconds=1.0)
    (share / "memo.docx").write_bytes(b"memo v1")
    assert agent.wait_idle(10)

    (share / "~WRD0002.tmp").write_bytes(b"memo v2")
    os.rename(share / "memo.docx", share / "~WRL0002.tmp")
    time.sleep(0.3)  # the editor is slow, not the test: several settle intervals pass
    os.rename(share / "~WRD0002.tmp", share / "memo.docx")
    (share / "~WRL0002.tmp").unlink()
    assert agent.wait_idle(10)

    versions = _versions(live_admin, "memo.docx")
    assert [v.sha256 for v in versions] == [sha(b"memo v1"), sha(b"memo v2")]
    actions = _actions(live_admin, "memo.docx")
    assert "document.deleted" not in actions


def test_a_slow_writer_is_never_recorded_half_written(share, start_agent, live_admin):
    # Frequent rescans too: a rescan must not catch the file mid-write either.
    agent = start_agent(share, settle_seconds=0.05, rescan_seconds=0.2)
    chunks = [bytes([65 + i]) * 4096 for i in range(10)]
    complete = b"".join(chunks)
    with open(share / "slow.bin", "wb") as handle:
        time.sleep(0.3)  # opened (created empty) and kept open before the first write
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.2)
    assert agent.wait_idle(15)

    versions = _versions(live_admin, "slow.bin")
    assert [v.sha256 for v in versions] == [sha(complete)]


def test_a_slow_rewrite_of_a_recorded_file_records_only_complete_contents(
    share, start_agent, live_admin
):
    agent = start_agent(share, settle_seconds=0.05, rescan_seconds=0.2)
    first = b"first complete content\n" * 100
    (share / "log.txt").write_bytes(first)
    assert agent.wait_idle(10)
    second = [b"second %d\n" % i * 200 for i in range(8)]
    with open(share / "log.txt", "wb") as handle:
        for chunk in second:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.25)
    assert agent.wait_idle(15)

    recorded = [v.sha256 for v in _versions(live_admin, "log.txt")]
    assert recorded == [sha(first), sha(b"".join(second))]


def test_unchanged_content_yields_no_new_version(share, start_agent, live_admin):
    agent = start_agent(share, **FAST)
    target = share / "same.txt"
    target.write_bytes(b"constant")
    assert agent.wait_idle(10)
    target.touch()
    target.write_bytes(b"constant")
    temp = share / "same.txt.new"
    temp.write_bytes(b"constant")
    os.replace(temp, target)
    assert agent.wait_idle(10)
    assert [v.number for v in _versions(live_admin, "same.txt")] == [1]
    assert set(_documents(live_admin)) == {"same.txt"}


def test_restored_bytes_are_a_new_version_that_names_the_version_they_repeat(
    share, start_agent, live_admin
):
    agent = start_agent(share, **FAST)
    target = share / "plan.txt"
    for content in (b"plan one", b"plan two", b"plan one"):
        target.write_bytes(content)
        assert agent.wait_idle(10)
    document = live_admin.lookup("share", "plan.txt")
    assert document.latest.number == 3
    recorded = [
        e.details for e in live_admin.history(document.id).events if e.action == "version.recorded"
    ]
    assert [d["number"] for d in recorded] == [1, 2, 3]
    assert recorded[-1]["same_bytes_as_version"] == 1
    assert recorded[1]["same_bytes_as_version"] is None


def test_symlinks_are_never_followed_nor_recorded(share, start_agent, live_admin, tmp_path, caplog):
    secret = tmp_path / "secret.key"
    secret_bytes = b"the private key nobody may upload " + os.urandom(16)
    secret.write_bytes(secret_bytes)
    (share / "inside.txt").write_bytes(b"inside")
    (share / "present-at-start").symlink_to(secret)
    caplog.set_level(logging.WARNING, logger="officium.agent")
    agent = start_agent(share, **FAST)
    (share / "escape").symlink_to(secret)
    (share / "alias.txt").symlink_to(share / "inside.txt")
    (share / "dir-escape").symlink_to(tmp_path, target_is_directory=True)
    assert agent.wait_idle(10)
    agent.request_rescan()
    assert agent.wait_idle(10)

    assert set(_documents(live_admin)) == {"inside.txt"}
    assert live_admin.verify(sha(secret_bytes)).matches == []
    assert not live_admin.has_content(sha(secret_bytes))
    assert "symbolic link" in caplog.text


def test_a_recorded_file_replaced_by_a_symlink_counts_as_deleted(
    share, start_agent, live_admin, tmp_path
):
    secret_bytes = b"secret " + os.urandom(16)
    (tmp_path / "secret.txt").write_bytes(secret_bytes)
    (share / "notes.txt").write_bytes(b"notes")
    (share / "sub").mkdir()
    (share / "sub" / "inner.txt").write_bytes(b"inner")
    agent = start_agent(share, **FAST)
    assert agent.wait_idle(10)
    (share / "notes.txt").unlink()
    (share / "notes.txt").symlink_to(tmp_path / "secret.txt")
    (share / "sub" / "inner.txt").unlink()
    (share / "sub").rmdir()
    (share / "sub").symlink_to(tmp_path, target_is_directory=True)
    assert agent.wait_idle(10)

    documents = _documents(live_admin)
    assert set(documents) == {"notes.txt", "sub/inner.txt"}
    assert all(d.deleted for d in documents.values())
    assert not live_admin.has_content(sha(secret_bytes))


def test_a_folder_replaced_by_a_symlink_is_not_read_through(
    share, start_agent, live_admin, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret_bytes = b"secret behind a link " + os.urandom(16)
    (outside / "report.txt").write_bytes(secret_bytes)
    (share / "reports").mkdir()
    (share / "reports" / "report.txt").write_bytes(b"the real report")
    agent = start_agent(share, **FAST)
    assert agent.wait_idle(10)
    os.rename(share / "reports", share / "reports-old")
    (share / "reports").symlink_to(outside, target_is_directory=True)
    (share / "reports-old" / "report.txt").write_bytes(b"the real report, edited")
    assert agent.wait_idle(10)
    agent.request_rescan()
    assert agent.wait_idle(10)

    documents = _documents(live_admin)
    assert set(documents) == {"reports-old/report.txt"}
    assert not live_admin.has_content(sha(secret_bytes))


def test_a_file_over_the_size_limit_is_logged_and_not_recorded(
    share, start_agent, live_admin, caplog
):
    caplog.set_level(logging.WARNING, logger="officium.agent")
    big_at_start = os.urandom(3000)
    (share / "big-at-start.bin").write_bytes(big_at_start)
    agent = start_agent(share, max_file_bytes=1000, **FAST)
    big = os.urandom(5000)
    (share / "big.bin").write_bytes(big)
    (share / "small.txt").write_bytes(b"small enough")
    assert agent.wait_idle(10)
    agent.request_rescan()
    assert agent.wait_idle(10)

    assert set(_documents(live_admin)) == {"small.txt"}
    assert not live_admin.has_content(sha(big))
    assert not live_admin.has_content(sha(big_at_start))
    assert "big.bin is 5000 bytes, over the agent's limit of 1000" in caplog.text
    assert "big-at-start.bin is 3000 bytes" in caplog.text

    # Cut down to size, it is recorded like any other file.
    (share / "big.bin").write_bytes(big[:500])
    assert agent.wait_idle(10)
    assert [v.sha256 for v in _versions(live_admin, "big.bin")] == [sha(big[:500])]


def test_a_recorded_file_that_grows_over_the_limit_is_not_recorded_again(
    share, start_agent, live_admin, caplog
):
    caplog.set_level(logging.WARNING, logger="officium.agent")
    agent = start_agent(share, max_file_bytes=1000, **FAST)
    (share / "grows.bin").write_bytes(b"small")
    assert agent.wait_idle(10)
    (share / "grows.bin").write_bytes(b"x" * 2000)
    assert agent.wait_idle(10)
    agent.request_rescan()
    assert agent.wait_idle(10)
    assert [v.sha256 for v in _versions(live_admin, "grows.bin")] == [sha(b"small")]
    assert "grows.bin is 2000 bytes" in caplog.text


def test_names_that_are_not_utf8_are_logged_and_the_rest_recorded(
    share, start_agent, live_admin, caplog
):
    caplog.set_level(logging.WARNING, logger="officium.agent")
    raw_share = os.fsencode(share)
    with open(os.path.join(raw_share, b"at-start\xfe.txt"), "wb") as handle:
        handle.write(b"present before the agent")
    agent = start_agent(share, **FAST)
    with open(os.path.join(raw_share, b"bad\xff.txt"), "wb") as handle:
        handle.write(b"bytes under a broken name")
    os.mkdir(os.path.join(raw_share, b"dir\xfa"))
    with open(os.path.join(raw_share, b"dir\xfa", b"inner.txt"), "wb") as handle:
        handle.write(b"inside a broken folder name")
    (share / "good.txt").write_bytes(b"fine")
    assert agent.wait_idle(10)
    agent.request_rescan()
    assert agent.wait_idle(10)

    assert set(_documents(live_admin)) == {"good.txt"}
    assert "not valid UTF-8" in caplog.text
    assert "bad\\xff.txt" in caplog.text
    # The agent still works after meeting them.
    (share / "later.txt").write_bytes(b"later")
    assert agent.wait_idle(10)
    assert set(_documents(live_admin)) == {"good.txt", "later.txt"}


def test_polling_mode_records_saves_renames_and_deletions(share, start_agent, live_admin):
    agent = start_agent(share, poll=True, poll_seconds=0.1, **FAST)
    assert agent.mode == "polling"
    (share / "a.txt").write_bytes(b"a1")
    (share / "gone.txt").write_bytes(b"to be deleted")
    assert agent.wait_idle(10)
    (share / "a.txt").write_bytes(b"a2")
    assert agent.wait_idle(10)
    os.rename(share / "a.txt", share / "b.txt")
    (share / "gone.txt").unlink()
    assert agent.wait_idle(10)

    documents = {d.path: d for d in live_admin.iter_documents(folder="share")}
    assert set(documents) == {"b.txt", "gone.txt"}
    assert documents["gone.txt"].deleted
    moved = documents["b.txt"]
    assert not moved.deleted
    assert [v.sha256 for v in live_admin.versions(moved.id)] == [sha(b"a1"), sha(b"a2")]
    assert "document.moved" in _actions(live_admin, "b.txt")


def test_polling_mode_never_records_a_slow_writer_half_written(share, start_agent, live_admin):
    agent = start_agent(share, poll=True, poll_seconds=0.1, settle_seconds=0.05)
    chunks = [bytes([97 + i]) * 1000 for i in range(8)]
    with open(share / "slow.txt", "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.15)
    assert agent.wait_idle(15)
    recorded = {v.sha256 for v in _versions(live_admin, "slow.txt")}
    prefixes = {hashlib.sha256(b"".join(chunks[:n])).hexdigest() for n in range(1, 9)}
    # Polling cannot see a writer close its file; all it can promise is that a writer
    # who keeps writing more often than the poll interval is not caught mid-way.
    assert recorded == {sha(b"".join(chunks))}
    assert recorded <= prefixes


def test_a_second_agent_on_the_same_folder_is_refused(share, start_agent, tmp_path):
    from agent.runner import AgentAlreadyRunning

    start_agent(share, **FAST)
    with pytest.raises(AgentAlreadyRunning, match=r"already watching .*share.*stop it first"):
        start_agent(share, **FAST)


def test_writes_from_several_threads_are_each_recorded_once(share, start_agent, live_admin):
    agent = start_agent(share, **FAST)

    def write(n):
        for i in range(20):
            (share / f"t{n}-{i}.txt").write_bytes(b"thread %d file %d" % (n, i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert agent.wait_idle(15)
    documents = _documents(live_admin)
    assert len(documents) == 80
    assert all(d.latest.number == 1 for d in documents.values())
