"""A deleted document leaves a residue: its id, metadata, hashes and whole history stay,
and the register says who (which agent, with its best author hint) removed it, and when.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from typer.testing import CliRunner

from clients.cli.main import build_app
from tests.conftest import ADMIN_TOKEN, sha

HINT = "lock file names 'alice'"
PLAN = b"the annual plan, as approved"

# The keys DESIGN section 4 promises for `status --json`.
STATUS_KEYS = frozenset(
    ("id", "folder", "path", "owner_office", "state", "deleted", "latest", "final", "awaiting")
)


@pytest.fixture
def officium(http):
    """Run ``officium ARGS...`` as the admin against the in-process app."""
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(
            build_app(),
            [*args, "--token", ADMIN_TOKEN],
            obj={"http_client": http},
            env={"COLUMNS": "200", "OFFICIUM_TOKEN": None},
        )
        assert result.exit_code == code, result.output
        return result

    return run


@pytest.fixture
def removed(agent, admin):
    """plan.docx, recorded and then deleted by the agent, with an author hint."""
    document_id = agent.save("plan.docx", PLAN, kind="created")["document_id"]
    entry = agent.entry("plan.docx", None, kind="deleted", author_hint=HINT)
    [result] = agent.report(entry)["results"]
    assert result["outcome"] == "deleted"
    return document_id


def test_status_of_a_deleted_document_says_who_removed_it_and_when(removed, admin, http):
    status = admin.document(removed)
    [event] = [e for e in admin.history(removed).events if e.action == "document.deleted"]
    assert status.deleted is True
    assert status.latest.sha256 == sha(PLAN)
    assert status.removed is not None
    assert (status.removed.by, status.removed.author_hint, status.removed.seq) == (
        "agent of plans",
        HINT,
        event.seq,
    )
    assert status.removed.actor == event.actor["id"] and status.removed.actor.startswith("agent:")
    assert status.removed.at == datetime.fromisoformat(event.time)
    assert status.removed.observed_at is not None
    # The same answer by path, where the file no longer is.
    assert admin.lookup("plans", "plan.docx").removed == status.removed


def test_a_live_or_reappeared_document_has_no_removal(removed, agent, admin):
    other = agent.save("other.docx", b"still here", kind="created")["document_id"]
    assert admin.document(other).removed is None
    again = agent.save("plan.docx", b"back again", kind="created")
    assert again["document_id"] == removed
    status = admin.document(removed)
    assert (status.deleted, status.removed) == (False, None)


def test_a_document_renamed_over_says_so(agent, admin):
    replaced = agent.save("b.txt", b"bee", kind="created")["document_id"]
    agent.save("a.txt", b"ay", kind="created")
    agent.report(agent.entry("b.txt", b"ay", kind="renamed", from_path="a.txt"))
    removal = admin.document(replaced).removed
    assert removal.by == "agent of plans"
    assert removal.reason == "'a.txt' was renamed over it"
    assert removal.author_hint is None


def test_cli_status_shows_the_removal_in_text_and_json(removed, officium):
    shown = officium("status", "plans:plan.docx").stdout
    assert "deleted" in shown
    assert "by agent of plans" in shown and HINT in shown
    as_json = json.loads(officium("status", str(removed), "--json").stdout)
    assert as_json.keys() >= STATUS_KEYS and as_json["deleted"] is True
    assert as_json["removed"]["by"] == "agent of plans"
    assert as_json["removed"]["author_hint"] == HINT
    assert as_json["removed"]["at"]


def test_cli_history_lists_the_deletion_event(removed, officium):
    record = json.loads(officium("history", str(removed), "--json").stdout)
    actions = [event["action"] for event in record["events"]]
    assert actions[-1] == "document.deleted" and "document.created" in actions
    assert record["events"][-1]["details"]["author_hint"] == HINT
    assert [v["sha256"] for v in record["versions"]] == [sha(PLAN)]
    shown = officium("history", str(removed)).stdout
    assert "document.deleted" in shown and "removed" in shown


def test_cli_verify_still_finds_the_bytes_of_a_deleted_document(removed, officium, tmp_path):
    copy = tmp_path / "plan-from-an-email.docx"
    copy.write_bytes(PLAN)
    result = json.loads(officium("verify", str(copy), "--json").stdout)
    [match] = result["matches"]
    assert (match["document_id"], match["number"], match["deleted"]) == (removed, 1, True)
    assert "document deleted" in officium("verify", str(copy)).stdout


def test_a_real_agent_records_who_removed_a_file(share, start_agent, live_admin, tmp_path):
    agent = start_agent(share)
    (share / "gone.odt").write_bytes(b"keep me")
    assert agent.wait_idle(10)
    # Alice has it open in LibreOffice (her lock file names her) when it is removed.
    (share / ".~lock.gone.odt#").write_bytes(b",alice,desk-12,01.02.2026 10:00,file:///home/alice;")
    assert agent.wait_idle(10)
    (share / "gone.odt").unlink()
    assert agent.wait_idle(10)
    status = live_admin.lookup("share", "gone.odt")
    assert status.deleted and status.removed is not None
    assert status.removed.by == "agent of share"
    assert status.removed.actor.startswith("agent:")
    assert "lock file names 'alice'" in status.removed.author_hint
    # The bytes it had stay retrievable.
    assert live_admin.download(status.id, 1, tmp_path / "copy.odt") == sha(b"keep me")
