"""Ingest bench: version reports per second, with their audit events, against bare durable commits.

Starts a real server (``officium serve``) on a free loopback port, uploads every content
first (timed apart), then times an agent posting R version reports in batches of B, every
report a new version (new documents alternate with modifications of existing ones), and
again R1 reports one per request to show the per-request cost. The baseline, measured in
the same run on the same disk, is the same number of durable commits of one small row
per report, in transactions of the same size: SQLite (WAL, synchronous=FULL) in the
server's data directory, or, with ``--database-url``, a scratch table in the run's
PostgreSQL database. At the end it checks that the audit chain verifies, that the
register holds exactly one version per report (no loss, no duplicates) and that a
replayed batch records nothing.

    .venv/bin/python bench/ingest.py [--reports 5000] [--batch 50] [--single 1000]
    .venv/bin/python bench/ingest.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

from _common import (  # bench/ is on sys.path when a bench runs as a script
    Contention,
    Register,
    add_server_options,
    commit_id,
    describe_database,
    environment_line,
    fixed_width,
    median,
    report,
    running_server,
    scratch_database,
    sha256,
)

# DESIGN §6, "ingest": reported versions per second with their audit events, SQLite.
VERSIONS_PER_S_BAR = 500


@dataclass
class Run:
    """One timed run: its reports (with contents) and what it measured."""

    name: str
    batch: int
    contents: list[bytes]
    reports: list[dict]
    documents: int
    seconds: float = 0.0
    events: int = 0
    request_latencies: list[float] | None = None
    baseline_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.reports) / self.seconds

    @property
    def baseline_per_second(self) -> float:
        return len(self.reports) / self.baseline_seconds


def plan(name: str, count: int, batch: int, rng: random.Random) -> Run:
    """``count`` reports, each a new version: new documents alternate with modifications."""
    versions: list[int] = []  # per document of this run, its latest version number
    contents, reports = [], []
    for index in range(count):
        if index % 2 == 0:
            versions.append(1)
            document, kind = len(versions) - 1, "created"
        else:
            document = rng.randrange(len(versions))
            versions[document] += 1
            kind = "modified"
        data = f"ingest {name} report {index} document {document}\n".encode() * 16
        contents.append(data)
        reports.append(
            report(f"{name}/doc-{document:06d}.odt", data, kind=kind, commit=commit_id(name, index))
        )
    return Run(name, batch, contents, reports, len(versions))


def post_timed(register: Register, run: Run, contention: Contention) -> None:
    """Post the run's reports in its batches; every one must be recorded as a new version."""
    before = register.chain()["head_seq"]
    latencies = []
    with register.agent() as agent, contention.timing():
        started = time.perf_counter()
        for first in range(0, len(run.reports), run.batch):
            sent = time.perf_counter()
            results = register.post_reports(agent, run.reports[first : first + run.batch])
            latencies.append(time.perf_counter() - sent)
            for result in results:
                if result["outcome"] != "recorded" or result["replayed"]:
                    raise RuntimeError(f"{run.name}: a report was not recorded anew: {result}")
        run.seconds = time.perf_counter() - started
    run.request_latencies = latencies
    run.events = register.chain()["head_seq"] - before


# ---------------------------------------------------------------- baselines


def _payloads(count: int) -> list[str]:
    return [sha256(str(i).encode()) for i in range(count)]


def sqlite_baseline(path: Path, rows: int, per_commit: int) -> float:
    """Seconds for ``rows`` single-row INSERTs in durable transactions of ``per_commit`` rows."""
    payloads = _payloads(rows)
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_row (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"
        )
        started = time.perf_counter()
        for first in range(0, rows, per_commit):
            connection.execute("BEGIN IMMEDIATE")
            for payload in payloads[first : first + per_commit]:
                connection.execute("INSERT INTO bench_row (payload) VALUES (?)", (payload,))
            connection.execute("COMMIT")
        return time.perf_counter() - started


def postgres_baseline(url: str, rows: int, per_commit: int) -> float:
    """The same on PostgreSQL: a scratch table in the run's own database."""
    import psycopg

    payloads = _payloads(rows)
    with psycopg.connect(url) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_row (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)"
        )
        connection.commit()
        started = time.perf_counter()
        for first in range(0, rows, per_commit):
            for payload in payloads[first : first + per_commit]:
                connection.execute("INSERT INTO bench_row (payload) VALUES (%s)", (payload,))
            connection.commit()
        return time.perf_counter() - started


# ------------------------------------------------------------------- checks


def check_register(register: Register, runs: list[Run]) -> list[list[str]]:
    """Chain, counts and replay: the rows of the closing check table."""
    rows = []
    documents = register.documents()
    recorded_versions = sum(d["latest"]["number"] for d in documents)  # numbers are gapless
    expected_versions = sum(len(run.reports) for run in runs)
    expected_documents = sum(run.documents for run in runs)
    rows.append(
        [
            "one version per report (no loss, no duplicates)",
            f"{recorded_versions} versions in {len(documents)} documents; "
            f"expected {expected_versions} in {expected_documents}",
            _ok(recorded_versions == expected_versions and len(documents) == expected_documents),
        ]
    )
    first = runs[0]
    with register.agent() as agent:
        replayed = register.post_reports(agent, first.reports[: first.batch])
    again = sum(d["latest"]["number"] for d in register.documents())
    rows.append(
        [
            "a batch sent again records nothing",
            f"{sum(r['replayed'] for r in replayed)} of {len(replayed)} answered as replays; "
            f"versions {recorded_versions} → {again}",
            _ok(all(r["replayed"] for r in replayed) and again == recorded_versions),
        ]
    )
    chain = register.chain()
    rows.append(
        [
            "audit chain verifies (GET /api/v1/audit/verify)",
            f"ok={chain['ok']}, {chain['checked']} events checked, head seq {chain['head_seq']}"
            + (f", first broken seq {chain['first_broken_seq']}" if not chain["ok"] else ""),
            _ok(chain["ok"] and chain["checked"] == chain["head_seq"]),
        ]
    )
    return rows


def _ok(condition: bool) -> str:
    return "OK" if condition else "FAILED"


# ------------------------------------------------------------------- output


def print_report(
    runs: list[Run],
    upload: tuple[int, float],
    checks: list[list[str]],
    args: argparse.Namespace,
    database: str,
    baseline: str,
    contention: Contention,
) -> bool:
    uploads, upload_s = upload
    print()
    print(environment_line(database, args.workers))
    print(contention.line())
    print(
        f"contents uploaded first, not timed below: {uploads} uploads in {upload_s:.1f} s "
        f"({uploads / upload_s:.0f}/s over 4 clients)"
    )
    print(
        f"baseline: {baseline}, one row per report, "
        "in transactions as large as the run's requests, same run, same disk"
    )
    print()
    rows = []
    for run in runs:
        rows.append(
            [
                run.name,
                str(len(run.reports)),
                str(run.batch),
                f"{run.seconds:.2f}",
                f"{run.per_second:.0f}",
                f"{run.events / run.seconds:.0f}",
                f"{median(run.request_latencies) * 1000:.1f}",
                f"{run.baseline_per_second:.0f}",
                f"{run.per_second / run.baseline_per_second:.2g}×",
            ]
        )
    print(
        fixed_width(
            [
                "run",
                "reports",
                "per request",
                "seconds",
                "reports/s",
                "audit events/s",
                "median request (ms)",
                "baseline rows/s",
                "ratio to baseline",
            ],
            rows,
        )
    )
    print()
    print(fixed_width(["check", "found", "result"], checks))
    print()
    main_run = runs[0]
    passed = main_run.per_second >= VERSIONS_PER_S_BAR
    verdict = "PASS" if passed else "MISS"
    bar = f"≥ {VERSIONS_PER_S_BAR} reported versions/s with their audit events, SQLite"
    if args.database_url:
        print(
            f"DESIGN §6 bar ({bar}): set for SQLite; on PostgreSQL this run made "
            f"{main_run.per_second:.0f}/s in batches of {main_run.batch} "
            f"({verdict} against the same figure)"
        )
    else:
        print(
            fixed_width(
                ["DESIGN §6 bar", "measured", "result"],
                [[bar, f"{main_run.per_second:.0f}/s in batches of {main_run.batch}", verdict]],
            )
        )
    return all(row[-1] == "OK" for row in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reports", type=int, default=5000, help="reports of the batched run (default 5000)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=50,
        help="reports per request in the batched run (default 50, at most 1000)",
    )
    parser.add_argument(
        "--single",
        type=int,
        default=1000,
        help="reports of the one-per-request run (default 1000; 0 skips it)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for the modifications")
    add_server_options(parser)
    args = parser.parse_args(argv)
    for name, low, high in (("reports", 2, 200_000), ("batch", 1, 1000), ("single", 0, 50_000)):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be between {low} and {high}")

    rng = random.Random(args.seed)
    runs = [plan("batched", args.reports, args.batch, rng)]
    if args.single:
        runs.append(plan("single", args.single, 1, rng))
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.database_url))
        database = describe_database(url)
        server = stack.enter_context(running_server(url, workers=args.workers))
        register = Register(server)
        contents = [data for run in runs for data in run.contents]
        upload = (len(contents), register.upload(contents))
        contention = Contention(server.process.pid, database_url=url)
        for run in runs:
            print(f"posting {len(run.reports)} reports, {run.batch} per request ...", flush=True)
            post_timed(register, run, contention)
        checks = check_register(register, runs)
        print("measuring the baseline ...", flush=True)
        for run in runs:
            if url is None:
                run.baseline_seconds = sqlite_baseline(
                    server.data_dir / f"baseline-{run.name}.db", len(run.reports), run.batch
                )
            else:
                run.baseline_seconds = postgres_baseline(url, len(run.reports), run.batch)
        baseline = (
            "psycopg INSERTs into a scratch table of the run's PostgreSQL database"
            if url
            else "sqlite3 INSERTs, WAL, synchronous=FULL, in the server's data directory"
        )
    ok = print_report(runs, upload, checks, args, database, baseline, contention)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
