"""The access log: reads of evidence are buffered, then written in batches that one
chained ``access.logged`` event seals with their digest (server/access.py).

The app here flushes only when told to (or when its buffer fills, or at shutdown), so
every count below is exact: nothing is written behind a test's back.
"""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from sqlmodel import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from clients.cli.main import build_app
from core.canonical import canonical_bytes, sha256_hex
from core.chain import format_time
from core.errors import Forbidden
from core.schemas import Role
from server import access
from server.app import create_app
from server.auth import Principal
from server.models import AccessEntry, AuditHead
from tests.conftest import ADMIN_TOKEN, sha

DRAFT = b"the annual plan, first draft"


@pytest.fixture
def settings(settings):
    """The default settings, with an interval no test waits for."""
    return settings.model_copy(update={"access_flush_seconds": 3600.0})


@pytest.fixture
def desk(agent, admin, client_for):
    """One recorded document, and Alice, a member of Planning, with an SDK client."""
    document_id = agent.save("plan.docx", DRAFT, kind="created")["document_id"]
    admin.create_person(username="alice", name="Alice Archer")
    admin.create_membership(username="alice", office="Planning", role=Role.member)
    alice = client_for(admin.create_token(username="alice").token)
    return document_id, alice


def written(app) -> tuple[int, tuple[int, str]]:
    """Rows in access_log, and the audit chain's head."""
    with app.state.db.reading() as session:
        rows = session.exec(sa.select(sa.func.count()).select_from(AccessEntry)).one()[0]
        head = session.get(AuditHead, 1)
        return rows, (head.seq, head.hash)


def sealing_events(admin) -> list:
    return [e for e in admin.iter_audit_events() if e.action == "access.logged"]


def recomputed_digest(entries) -> str:
    """The README's recipe, followed from the API's answer alone."""
    rows = [
        {
            "id": e.id,
            "at": format_time(e.at),
            "actor": e.actor,
            "actor_name": e.actor_name,
            "action": e.action,
            "document_id": e.document_id,
            "version_number": e.version_number,
            "detail": e.detail,
        }
        for e in entries
    ]
    return sha256_hex(canonical_bytes(rows))


def test_a_download_and_verify_look_ups_are_recorded_with_who_what_and_when(
    app, desk, admin, clock, tmp_path
):
    document_id, alice = desk
    before_rows, before_head = written(app)
    started = clock()
    assert alice.download(document_id, 1, tmp_path / "copy.docx") == sha(DRAFT)
    assert [m.document_id for m in alice.verify(sha(DRAFT)).matches] == [document_id]
    assert alice.verify(sha(b"a copy nobody recorded")).matches == []
    finished = clock()

    # Reads wrote nothing: no row, no event, until the flush.
    assert written(app) == (before_rows, before_head) == (0, before_head)
    assert app.state.access_log.pending == 3
    assert app.state.access_log.flush() == 3
    assert app.state.access_log.pending == 0

    entries = list(admin.iter_access_log())
    assert [(e.action, e.document_id, e.version_number, e.detail) for e in entries] == [
        ("content.download", document_id, 1, sha(DRAFT)),
        ("verify.lookup", document_id, 1, sha(DRAFT)),
        ("verify.lookup", None, None, sha(b"a copy nobody recorded")),
    ]
    assert {(e.actor_name, e.actor.split(":")[0]) for e in entries} == {("Alice Archer", "person")}
    assert all(started <= e.at <= finished for e in entries)
    assert [e.id for e in admin.iter_access_log(document=document_id)] == [
        e.id for e in entries[:2]
    ]
    # A flush with nothing buffered appends nothing.
    assert app.state.access_log.flush() == 0
    assert len(sealing_events(admin)) == 1


def test_each_batch_is_sealed_by_one_chained_event_carrying_its_digest(app, desk, admin):
    _, alice = desk
    for _ in range(2):
        alice.verify(sha(DRAFT))
    app.state.access_log.flush()
    alice.verify(sha(DRAFT))
    app.state.access_log.flush()

    events = sealing_events(admin)
    entries = list(admin.iter_access_log())
    assert len(events) == 2 and len(entries) == 3
    for event in events:
        batch = [e for e in entries if e.sealed_by_seq == event.seq]
        assert event.actor["id"] == "system" and event.subject == {}
        assert event.details == {
            "count": len(batch),
            "first_id": batch[0].id,
            "last_id": batch[-1].id,
            "sha256": recomputed_digest(batch),
            "dropped": 0,
        }
        # The check can fail: one changed field gives another digest.
        altered = [batch[0].model_copy(update={"actor_name": "Mallory"}), *batch[1:]]
        assert recomputed_digest(altered) != event.details["sha256"]
    assert [e.id for e in entries] == [1, 2, 3]
    check = admin.audit_verify()
    assert check.ok and check.head_seq == events[-1].seq


def test_a_full_buffer_is_written_without_waiting_for_the_interval(app, http):
    reader = Principal(token_id=1, name="Reader", person_id=1, username="admin")
    for n in range(access.FLUSH_AT):
        access.record(app, reader, "verify.lookup", detail=f"look-up {n}")
    # The flusher wakes when the buffer reaches FLUSH_AT, not after the hour-long interval.
    deadline = time.monotonic() + 60
    while written(app)[0] < access.FLUSH_AT:
        assert time.monotonic() < deadline, "a full buffer was not written"
        time.sleep(0.02)
    assert app.state.access_log.pending == 0


def test_a_large_backlog_is_written_in_batches_of_at_most_flush_at(app, desk, admin):
    reader = Principal(token_id=1, name="Reader", person_id=1, username="admin")
    log = app.state.access_log
    log.flush_at = 1_000_000  # buffer without waking the flusher; this test flushes itself
    for n in range(10):
        access.record(app.state, reader, "audit.export", detail=f"export {n}")
    log.flush_at = 4
    assert log.flush() == 10
    assert [e.details["count"] for e in sealing_events(admin)] == [4, 4, 2]
    assert [e.details["first_id"] for e in sealing_events(admin)] == [1, 5, 9]
    assert admin.audit_verify().ok


def test_a_full_buffer_drops_new_entries_and_the_next_event_says_how_many(app, desk, admin):
    log = access.AccessLog(app.state.db, clock=app.state.clock, every=3600, max_pending=2)
    reader = Principal(token_id=1, name="Reader", person_id=1, username="admin")
    for _ in range(3):
        log.record(reader, "certificate.download", document_id=desk[0], version_number=1)
    assert log.flush() == 2
    [event] = sealing_events(admin)
    assert (event.details["count"], event.details["dropped"]) == (2, 1)


def test_an_unknown_action_is_refused_at_once(app):
    reader = Principal(token_id=1, name="Reader", person_id=1, username="admin")
    with pytest.raises(ValueError, match="not an access-log action"):
        access.record(app, reader, "content.peek")


def test_shutdown_flushes_what_is_buffered(settings, clock):
    app = create_app(settings, clock=clock)
    with TestClient(app, base_url="http://testserver") as client:
        response = client.get(
            f"/api/v1/verify/{sha(b'anything')}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert response.status_code == 200
        assert written(app)[0] == 0
    assert written(app)[0] == 1
    with app.state.db.reading() as session:
        [row] = session.exec(select(AccessEntry)).all()
    assert (row.action, row.detail, row.actor) == ("verify.lookup", sha(b"anything"), "person:1")
    app.state.db.dispose()


def test_only_auditors_and_admins_read_the_access_log(desk, admin, client_for):
    _, alice = desk
    with pytest.raises(Forbidden):
        alice.access_log()
    admin.create_person(username="audrey", name="Audrey Auditor")
    admin.create_membership(username="audrey", office="Planning", role=Role.auditor)
    audrey = client_for(admin.create_token(username="audrey").token)
    assert audrey.access_log().entries == []


def test_cli_audit_access_lists_the_reads_of_one_document(app, desk, http, tmp_path):
    document_id, alice = desk
    alice.download(document_id, 1, tmp_path / "copy.docx")
    alice.verify(sha(b"something else"))
    app.state.access_log.flush()
    runner = CliRunner()

    def officium(*args: str):
        result = runner.invoke(
            build_app(),
            [*args, "--token", ADMIN_TOKEN],
            obj={"http_client": http},
            env={"COLUMNS": "200", "OFFICIUM_TOKEN": None},
        )
        assert result.exit_code == 0, result.output
        return result

    listed = json.loads(
        officium("audit", "access", "--document", "plans:plan.docx", "--json").stdout
    )
    assert [(e["action"], e["actor_name"]) for e in listed["entries"]] == [
        ("content.download", "Alice Archer")
    ]
    assert listed["next"] is None
    everything = json.loads(officium("audit", "access", "--json").stdout)["entries"]
    assert [e["action"] for e in everything] == ["content.download", "verify.lookup"]
    first = json.loads(officium("audit", "access", "--limit", "1", "--json").stdout)
    assert first["next"] == everything[0]["id"]
    shown = officium("audit", "access").stdout
    assert "content.download" in shown and "Alice Archer" in shown and f"#{document_id}" in shown
