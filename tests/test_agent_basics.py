"""The agent end to end: a real folder, real inotify, real git, a real HTTP server."""

from __future__ import annotations

import os
import subprocess
import time

from tests.conftest import sha


def _versions(client, folder, path):
    document = client.lookup(folder, path)
    return document, client.versions(document.id)


def test_a_save_becomes_one_recorded_version(share, start_agent, live_admin):
    agent = start_agent(share)
    (share / "plan.docx").write_bytes(b"first")
    assert agent.wait_idle(10)
    (share / "plan.docx").write_bytes(b"second")
    assert agent.wait_idle(10)
    document, versions = _versions(live_admin, "share", "plan.docx")
    assert [v.sha256 for v in versions] == [sha(b"first"), sha(b"second")]
    assert document.latest.number == 2


def test_the_share_gets_no_git_dir_and_history_lives_in_the_state_dir(share, start_agent, tmp_path):
    agent = start_agent(share)
    (share / "a.txt").write_bytes(b"a")
    assert agent.wait_idle(10)
    assert not (share / ".git").exists()
    log = subprocess.run(
        ["git", f"--git-dir={agent.state / 'repo.git'}", "log", "--format=%an|%cn|%s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Officium agent" in log
    assert "officium: 1 change(s)" in log


def test_reconcile_at_start_records_what_changed_while_down(share, start_agent, live_admin):
    (share / "old.txt").write_bytes(b"before the agent")
    agent = start_agent(share)
    assert agent.wait_idle(10)
    agent.stop()
    (share / "old.txt").write_bytes(b"edited while down")
    (share / "new.txt").write_bytes(b"created while down")
    agent = start_agent(share)
    assert agent.wait_idle(10)
    _, versions = _versions(live_admin, "share", "old.txt")
    assert [v.sha256 for v in versions] == [sha(b"before the agent"), sha(b"edited while down")]
    assert live_admin.lookup("share", "new.txt").latest.sha256 == sha(b"created while down")


def test_atomic_save_yields_one_version_of_the_target(share, start_agent, live_admin):
    agent = start_agent(share)
    (share / "report.odt").write_bytes(b"v1")
    assert agent.wait_idle(10)
    temp = share / ".report.odt.XYZ123"
    temp.write_bytes(b"v2 complete")
    os.replace(temp, share / "report.odt")
    assert agent.wait_idle(10)
    _, versions = _versions(live_admin, "share", "report.odt")
    assert [v.sha256 for v in versions] == [sha(b"v1"), sha(b"v2 complete")]
    names = {d.path for d in live_admin.iter_documents(folder="share")}
    assert names == {"report.odt"}


def test_rename_keeps_identity(share, start_agent, live_admin):
    agent = start_agent(share)
    (share / "draft.txt").write_bytes(b"text")
    assert agent.wait_idle(10)
    before = live_admin.lookup("share", "draft.txt")
    (share / "sub").mkdir()
    os.rename(share / "draft.txt", share / "sub" / "final.txt")
    assert agent.wait_idle(10)
    after = live_admin.lookup("share", "sub/final.txt")
    assert after.id == before.id
    assert after.latest.number == 1
    assert any(e.action == "document.moved" for e in live_admin.history(after.id).events)


def test_deletion_is_recorded_and_content_stays(share, start_agent, live_admin, tmp_path):
    agent = start_agent(share)
    (share / "gone.txt").write_bytes(b"keep me")
    assert agent.wait_idle(10)
    (share / "gone.txt").unlink()
    assert agent.wait_idle(10)
    document = live_admin.lookup("share", "gone.txt")
    assert document.deleted
    assert live_admin.download(document.id, 1, tmp_path / "copy") == sha(b"keep me")
    assert (tmp_path / "copy").read_bytes() == b"keep me"


def test_a_first_import_larger_than_one_request_is_reported_whole(share, start_agent, live_admin):
    for i in range(1050):  # more reports in one commit than one request may carry
        (share / f"f{i:04}.txt").write_bytes(b"file %d" % i)
    agent = start_agent(share)
    assert agent.wait_idle(120)
    documents = list(live_admin.iter_documents(folder="share"))
    assert len(documents) == 1050
    assert {d.latest.number for d in documents} == {1}


def test_an_approved_version_is_tagged_in_the_folders_history(share, start_agent, live_admin):
    live_admin.create_office(name="Legal")
    live_admin.create_membership(username="admin", office="Legal", role="approver")
    agent = start_agent(share, tag_seconds=0.1)
    (share / "plan.docx").write_bytes(b"the approved bytes")
    assert agent.wait_idle(10)
    document = live_admin.lookup("share", "plan.docx")
    live_admin.change_owner(document.id, "Legal")
    live_admin.submit(document.id, parties=["office:Legal"], separation_of_duties=False)
    live_admin.approve(document.id)
    git_dir = agent.state / "repo.git"
    tag = f"officium/approved/{document.id}/v1"

    def tagged() -> str:
        return subprocess.run(
            ["git", f"--git-dir={git_dir}", "tag", "--list", tag],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    deadline = time.monotonic() + 15
    while not tagged() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tagged() == tag
    shown = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", "-s", "--format=%(contents)", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "approved: plan.docx v1" in shown


def test_restore_puts_a_version_back_and_the_agent_records_it(
    share, start_agent, live_admin, live_server
):
    from typer.testing import CliRunner

    from clients.cli.main import build_app
    from tests.conftest import ADMIN_TOKEN

    agent = start_agent(share)
    (share / "plan.docx").write_bytes(b"first draft")
    assert agent.wait_idle(10)
    (share / "plan.docx").write_bytes(b"second draft")
    assert agent.wait_idle(10)
    result = CliRunner().invoke(
        build_app(),
        [
            "restore",
            "share:plan.docx",
            "--version",
            "1",
            "--json",
            "--server",
            live_server,
            "--token",
            ADMIN_TOKEN,
        ],
    )
    assert result.exit_code == 0, result.output
    assert (share / "plan.docx").read_bytes() == b"first draft"
    assert agent.wait_idle(10)
    document = live_admin.lookup("share", "plan.docx")
    assert document.latest.number == 3
    assert document.latest.sha256 == sha(b"first draft")
    recorded = [e for e in live_admin.history(document.id).events if e.action == "version.recorded"]
    assert recorded[-1].details["same_bytes_as_version"] == 1
