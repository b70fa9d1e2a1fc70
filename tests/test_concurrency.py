"""Writers racing for the audit chain: OS processes on one database, threads on one app.

The chain must stay gapless and verifiable, no writer may see a deadlock or an error,
and idempotent reports must stay idempotent when replays arrive at the same moment.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from server import audit
from server.db import Database, make_engine
from server.models import AuditEvent, Document, Person, Version
from server.settings import Settings
from tests.conftest import sha

PROCESSES = 4
WRITES = 25
TIMEOUT = 120  # seconds; only reached if writers deadlock

# Each writer connects, says it is ready, waits for the common start signal, then appends
# WRITES events, each in its own serialised transaction, as a server process would.
WRITER = """
import sys, time
from pathlib import Path
from server import directory
from server.audit import SYSTEM
from server.db import Database, make_engine
from server.settings import Settings

url, data_dir, worker, count, go = sys.argv[1:]
db = Database(make_engine(Settings(database_url=url, data_dir=data_dir)))
db.ping()
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.001)
for i in range(int(count)):
    with db.writing() as session:
        directory.create_person(session, actor=SYSTEM, username=f"w{worker}-{i}", name=None)
db.dispose()
print("done", flush=True)
"""


def _run_writers(url: str, tmp_path: Path) -> list[tuple[int, str, str]]:
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", WRITER, url, str(tmp_path / f"data{n}"), str(n),
             str(WRITES), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        go.touch()
        results = []
        for writer in writers:
            out, err = writer.communicate(timeout=TIMEOUT)
            results.append((writer.returncode, out, err))
        return results
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()


def test_processes_appending_at_once_keep_the_chain_gapless(database_url, tmp_path):
    results = _run_writers(database_url, tmp_path)
    for returncode, out, err in results:
        assert (returncode, out.split(), err) == (0, ["done"], "")

    database = Database(make_engine(Settings(database_url=database_url, data_dir=tmp_path)))
    try:
        with database.reading() as session:
            seqs = session.exec(sa.select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars().all()
            usernames = set(session.exec(sa.select(Person.username)).scalars())
            check = audit.check_chain(session)
            actions = session.exec(
                sa.select(AuditEvent.action).where(AuditEvent.seq > 1)
            ).scalars().all()
    finally:
        database.dispose()
    total = 1 + PROCESSES * WRITES  # the bootstrap event, then every writer's
    assert seqs == list(range(1, total + 1))
    assert check.ok, check
    assert (check.checked, check.head_seq) == (total, total)
    assert set(actions) == {"person.created"}
    assert usernames == {"admin"} | {f"w{n}-{i}" for n in range(PROCESSES) for i in range(WRITES)}


def test_concurrent_replays_of_one_report_record_one_version(http, agent, app):
    data = b"the same save, sent by a retrying agent"
    agent.upload(data)
    entry = agent.entry("plan.docx", data, kind="created")
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: agent.report(entry)["results"][0], range(16)))
    assert sorted(r["replayed"] for r in results) == [False] + [True] * 15
    assert {(r["outcome"], r["document_id"], r["version"]["number"]) for r in results} == {
        ("recorded", results[0]["document_id"], 1)
    }
    with app.state.db.reading() as session:
        assert session.exec(sa.select(sa.func.count()).select_from(Version)).one()[0] == 1
        actions = session.exec(
            sa.select(AuditEvent.action).where(AuditEvent.document_id.is_not(None))
        ).scalars().all()
        assert audit.check_chain(session).ok
    assert actions == ["document.created", "version.recorded"]


def test_concurrent_first_saves_of_one_path_make_one_document(http, agent, app):
    # Several commits saw the same new file (say, two agents' retries after a crash).
    data = b"one file, several commits"
    agent.upload(data)
    entries = [agent.entry("new/plan.docx", data, kind="created") for _ in range(12)]
    assert len({e["commit"] for e in entries}) == 12
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda e: agent.report(e)["results"][0], entries))
    assert sorted(r["outcome"] for r in results) == ["recorded"] + ["unchanged"] * 11
    assert {r["document_id"] for r in results} == {results[0]["document_id"]}
    assert all(r["version"] == {"number": 1, "sha256": sha(data)} for r in results)
    with app.state.db.reading() as session:
        counted = [
            session.exec(sa.select(sa.func.count()).select_from(table)).one()[0]
            for table in (Document, Version)
        ]
        assert audit.check_chain(session).ok
    assert counted == [1, 1]
