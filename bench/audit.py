"""Audit bench: export and offline verification of a large trail, beside raw SHA-256.

Starts a real server (``officium serve``, SQLite) and records one document through the
agent's wire, so the trail starts with events of the server's own making. Then it
grows the trail to each size of ``--sizes`` (default 100,000 and 1,000,000 events) by
writing documents, versions, their content and their events straight into the
server's database: each event is sealed with core.chain exactly as the server seals
it, shaped like the real ``document.created``/``version.recorded`` events, under the
database's writer lock. Seeding is not timed.

At each size it times, as separate processes the way an auditor runs them:

* ``checkpoint``: ``POST /api/v1/audit/checkpoints`` (the server extends its stored
  Merkle nodes over the new events and signs a checkpoint);
* ``export``: ``officium audit export --format bundle -o FILE`` (the server streams the
  bundle; the CLI writes it);
* ``verify``: ``officium audit verify FILE --key KEYFILE`` (offline: no server, no
  database).

Peak memory is the peak resident set (``VmHWM`` in ``/proc``) of each process: the
export and verify commands', and the server's over its whole life. The baseline,
measured in the same run over the same bytes, is the raw SHA-256 rate: reading the
bundle and hashing every event's canonical bytes once, with nothing else. Memory is
constant when the peak does not grow with the number of events.

    .venv/bin/python bench/audit.py [--sizes 100000,1000000] [--documents-per 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import (  # bench/ is on sys.path when a bench runs as a script
    Register,
    commit_id,
    environment_line,
    fixed_width,
    report,
    running_server,
)

from core.bundle import is_event_line, split_event_line
from core.chain import seal

BAR_EVENTS_PER_S = 100_000
BAR_PEAK_MB = 200


def _officium() -> str:
    return str(Path(sys.executable).with_name("officium"))


def _sql_time(moment: datetime) -> str:
    # How SQLAlchemy stores the server's UTC datetimes in SQLite (naive, UTC).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


class Seeder:
    """Appends documents, versions, content and their events straight to the database."""

    def __init__(self, data_dir: Path, versions_per_document: int) -> None:
        self.database = data_dir / "officium.db"
        self.objects = data_dir / "content" / "objects"
        self.versions = versions_per_document
        with sqlite3.connect(self.database) as connection:
            created, recorded = (
                json.loads(
                    connection.execute(
                        "SELECT canonical FROM audit_event WHERE action = ? ORDER BY seq LIMIT 1",
                        (action,),
                    ).fetchone()[0]
                )
                for action in ("document.created", "version.recorded")
            )
            self.folder_id, self.owner_id = connection.execute(
                "SELECT folder_id, owner_office_id FROM document ORDER BY id LIMIT 1"
            ).fetchone()
        self.created, self.recorded = created, recorded

    def grow_to(self, target: int) -> int:
        """Add whole documents until the trail holds at least ``target`` events."""
        connection = sqlite3.connect(self.database, isolation_level=None, timeout=60)
        try:
            connection.execute("PRAGMA synchronous = OFF")
            while True:
                connection.execute("BEGIN IMMEDIATE")
                seq, head = connection.execute(
                    "SELECT seq, hash FROM audit_head WHERE id = 1"
                ).fetchone()
                if seq >= target:
                    connection.execute("ROLLBACK")
                    return seq
                next_document = connection.execute("SELECT max(id) FROM document").fetchone()[0]
                batch = min(20_000, -(-(target - seq) // (1 + self.versions)))
                seq, head = self._append(connection, seq, head, next_document + 1, batch)
                connection.execute(
                    "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, head)
                )
                connection.execute("COMMIT")
        finally:
            connection.close()

    def _append(self, connection, seq, head, first_document, count):
        events, documents, versions = [], [], []
        now = datetime.now(UTC)
        for document in range(first_document, first_document + count):
            path = f"dossiers/{document // 1000:04d}/{document:07d}.txt"
            bodies = [self._created(document, path)]
            latest = ""
            for number in range(1, self.versions + 1):
                data = f"document {document}, version {number}\n".encode()
                latest = hashlib.sha256(data).hexdigest()
                self._store(latest, data)
                bodies.append(self._recorded(document, path, number, latest, len(data)))
                versions.append(
                    (document, number, latest, len(data), commit_id(document, number), now)
                )
            documents.append((document, path, latest, now))
            for action, subject, details in bodies:
                seq += 1
                sealed = seal(
                    seq=seq,
                    time=now,
                    actor=self.created["actor"],
                    action=action,
                    subject=subject,
                    details=details,
                    prev=head,
                )
                head = sealed.hash
                events.append(
                    (
                        seq,
                        _sql_time(now),
                        action,
                        self.created["actor"]["id"],
                        document,
                        self.folder_id,
                        sealed.canonical,
                        sealed.hash,
                    )
                )
        connection.executemany(
            "INSERT INTO document (id, folder_id, path, owner_office_id, state, deleted, "
            "latest_number, latest_sha256, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'draft', 0, ?, ?, ?, ?)",
            [
                (d, self.folder_id, p, self.owner_id, self.versions, s, _sql_time(t), _sql_time(t))
                for d, p, s, t in documents
            ],
        )
        connection.executemany(
            'INSERT INTO version (document_id, number, sha256, size, "commit", observed_at, '
            "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(d, n, s, z, c, _sql_time(t), _sql_time(t)) for d, n, s, z, c, t in versions],
        )
        connection.executemany(
            "INSERT INTO audit_event (seq, time, action, actor, document_id, folder_id, "
            "canonical, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        return seq, head

    def _created(self, document: int, path: str):
        details = {**self.created["details"], "path": path}
        return "document.created", {**self.created["subject"], "document": document}, details

    def _recorded(self, document: int, path: str, number: int, digest: str, size: int):
        details = {
            **self.recorded["details"],
            "path": path,
            "number": number,
            "sha256": digest,
            "size": size,
            "commit": commit_id(document, number),
            "kind": "created" if number == 1 else "modified",
        }
        subject = {**self.recorded["subject"], "document": document, "version": number}
        return "version.recorded", subject, details

    def _store(self, digest: str, data: bytes) -> None:
        target = self.objects / digest[:2] / digest[2:4] / digest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _run(command: list[str], *, env: dict[str, str]) -> tuple[float, float, int, str]:
    """Run a process; its wall seconds, peak RSS in MB, exit code and output tail.

    The peak is the process's own ``VmHWM`` (its high-water mark, which starts afresh at
    exec), read every 10 ms until it exits. ``ru_maxrss`` from ``wait4`` would not do:
    Linux carries the parent's peak over into a forked child, so the child would seem
    as large as this bench.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _peak_mb(process.pid) or 0.0)
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        output.seek(0)
        tail = output.read().decode(errors="replace")[-2000:]
    return seconds, peak, process.returncode, tail


def _peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _raw_sha256(bundle: Path) -> tuple[float, int, int]:
    """Read the bundle and hash every event's canonical bytes once: seconds, events, bytes."""
    started = time.perf_counter()
    events = size = 0
    with bundle.open("rb") as handle:
        for line in handle:
            if is_event_line(line):
                _, canonical = split_event_line(line)
                hashlib.sha256(canonical).digest()
                events += 1
                size += len(canonical)
    return time.perf_counter() - started, events, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--documents-per",
        type=int,
        default=5,
        dest="versions",
        help="versions per seeded document (events per document - 1)",
    )
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    print(environment_line("SQLite (WAL, synchronous=FULL)"), flush=True)
    rows = []
    with running_server(None) as server:
        register = Register(server, office="Registry", folder="archive")
        with register.agent() as agent:
            data = b"the first document, through the agent's wire\n"
            agent.put(f"/api/v1/content/{hashlib.sha256(data).hexdigest()}", content=data)
            agent.post(
                "/api/v1/folders/archive/reports",
                json={"reports": [report("welcome.txt", data, kind="created", commit="0" * 40)]},
            ).raise_for_status()
        seeder = Seeder(server.data_dir / "server", options.versions)
        work = server.data_dir / "work"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICIUM_")}
        env.update(OFFICIUM_URL=server.url, OFFICIUM_TOKEN=server.admin_token)
        keyfile = work / "keys.json"
        _, _, code, output = _run([_officium(), "audit", "key", "-o", str(keyfile)], env=env)
        if code:
            raise SystemExit(f"officium audit key failed ({code}):\n{output}")
        for size in sizes:
            started = time.perf_counter()
            events = seeder.grow_to(size)
            print(f"seeded {events:,} events in {time.perf_counter() - started:.0f} s", flush=True)
            with server.client() as admin:
                started = time.perf_counter()
                admin.post("/api/v1/audit/checkpoints").raise_for_status()
                checkpoint_s = time.perf_counter() - started
            bundle = work / f"bundle-{events}.jsonl"
            export_s, export_mb, code, output = _run(
                [_officium(), "audit", "export", "--format", "bundle", "-o", str(bundle)], env=env
            )
            if code:
                raise SystemExit(f"officium audit export failed ({code}):\n{output}")
            server_mb = _peak_mb(server.process.pid)
            verify_s, verify_mb, code, output = _run(
                [_officium(), "audit", "verify", str(bundle), "--key", str(keyfile)],
                env={k: v for k, v in env.items() if not k.startswith("OFFICIUM_")},
            )
            if code:
                raise SystemExit(f"officium audit verify failed ({code}):\n{output}")
            raw_s, raw_events, raw_bytes = _raw_sha256(bundle)
            assert raw_events == events, (raw_events, events)
            rows.append(
                {
                    "events": events,
                    "bundle_mb": bundle.stat().st_size / 2**20,
                    "checkpoint_s": checkpoint_s,
                    "export_s": export_s,
                    "export_mb": export_mb,
                    "server_mb": server_mb,
                    "verify_s": verify_s,
                    "verify_mb": verify_mb,
                    "raw_s": raw_s,
                    "raw_mb_s": raw_bytes / 2**20 / raw_s,
                }
            )
            bundle.unlink()
    _print(rows)


def _print(rows: list[dict]) -> None:
    headers = [
        "events",
        "bundle",
        "checkpoint",
        "export",
        "export/s",
        "CLI peak",
        "server peak",
        "verify",
        "verify/s",
        "verify peak",
        "raw SHA-256/s",
        "ratio",
    ]
    table = []
    for row in rows:
        n = row["events"]
        table.append(
            [
                f"{n:,}",
                f"{row['bundle_mb']:.0f} MB",
                f"{row['checkpoint_s']:.1f} s",
                f"{row['export_s']:.1f} s",
                f"{n / row['export_s']:,.0f}",
                f"{row['export_mb']:.0f} MB",
                "?" if row["server_mb"] is None else f"{row['server_mb']:.0f} MB",
                f"{row['verify_s']:.1f} s",
                f"{n / row['verify_s']:,.0f}",
                f"{row['verify_mb']:.0f} MB",
                f"{n / row['raw_s']:,.0f} ({row['raw_mb_s']:.0f} MB/s)",
                f"{row['raw_s'] / row['verify_s']:.2f}x",
            ]
        )
    print(fixed_width(headers, table))
    last = rows[-1]
    rate = last["events"] / last["verify_s"]
    peak = max(max(r["verify_mb"], r["export_mb"]) for r in rows)
    print(
        f"verify {rate:,.0f} events/s (bar {BAR_EVENTS_PER_S:,}): "
        f"{'PASS' if rate >= BAR_EVENTS_PER_S else 'MISS'}; "
        f"peak memory of export and verify {peak:.0f} MB (bar {BAR_PEAK_MB} MB, constant): "
        f"{'PASS' if peak <= BAR_PEAK_MB else 'MISS'}"
    )
    print("ratio = the verifier's speed as a share of raw SHA-256 over the same bytes")


if __name__ == "__main__":
    main()
