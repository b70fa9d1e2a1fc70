"""Save-to-recorded bench: how long from a save in the share until the server has it as a
version, and whether a half-written file is ever recorded.

Starts a real server (``officium serve``) and a real agent (``officium agent``, a separate
process) on a folder of a few files, then saves them in turn, ``--saves`` times: each save
writes new bytes of a realistic size (50-500 KB, incompressible like an office file)
through one open file in several flushed chunks, with pauses between the chunks that are
often longer than the agent's settle interval, so a half-written file could be caught.
After each close the bench asks the server (``GET /api/v1/documents/lookup``, a tight
loop) until the document's latest version holds the bytes just written: that is the
latency. At the end every recorded version of every file is checked against the bytes of
complete saves: a version whose SHA-256 is not one of them held partial content.

Baseline, same run, same writes: a naive auto-committer with no settling (gitwatch with no
delay) on a plain git repository of a copy of the folder: a loop that runs
``git add -A && git commit`` whenever a file's mtime or size changed, concurrently with the
writer. Its latency is the time from the close until a commit holds the complete bytes;
it also shows how many of its commits held half-written files.

    .venv/bin/python bench/agent_latency.py [--saves 200] [--files 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from _agent_common import (
    AGENT_MODE_RE,
    REFUSED,
    AuditTail,
    LogSummary,
    MachineShare,
    add_agent_options,
    cpu_s,
    git_blob_id,
    logged_commits,
    plain_git,
    ratio,
    running_agent,
    scratch_dir,
    seconds,
    shown_command,
    verdict,
    wait_until,
    write_in_chunks,
)
from _common import (  # bench/ is on sys.path when a bench runs as a script
    add_server_options,
    describe_database,
    environment_line,
    fixed_width,
    median,
    percentile,
    running_server,
    scratch_database,
    sha256,
)

# DESIGN §6, "save → recorded".
MEDIAN_BAR_S = 0.3
P99_BAR_S = 1.0


@dataclass(frozen=True, slots=True)
class Save:
    """One planned save: which file, its bytes' seed and size, how it is written."""

    path: str
    seed: int
    size: int
    pauses: tuple[float, ...]  # between the chunks
    gap: float  # quiet after the save is seen, before the next one

    def content(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)


@dataclass
class Phase:
    """What one phase (agent or baseline) measured."""

    latencies: list[float | None] = field(default_factory=list)  # None: never seen
    opens: list[float] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    closes_wall: list[float] = field(default_factory=list)  # time.time(), for the agent's log
    committed: list[float | None] = field(default_factory=list)  # close → git commit (log)
    lookups: int = 0
    wall_s: float = 0.0
    cpu_s: float | None = None  # the agent's (with its git commands) or the committer's
    server_cpu_s: float | None = None


def plan(args: argparse.Namespace) -> tuple[dict[str, bytes], list[Save]]:
    rng = random.Random(args.seed)
    names = [f"reports/report-{i + 1}.docx" for i in range(args.files)]
    initial = {name: rng.randbytes(rng.randint(args.min_kb, args.max_kb) * 1024) for name in names}
    saves = []
    for index in range(args.saves):
        saves.append(
            Save(
                path=names[index % len(names)],
                seed=rng.getrandbits(64),
                size=rng.randint(args.min_kb * 1024, args.max_kb * 1024),
                pauses=tuple(
                    rng.uniform(0.005, args.max_pause_ms / 1000) for _ in range(args.chunks - 1)
                ),
                gap=rng.uniform(0, args.max_gap_ms / 1000),
            )
        )
    return initial, saves


def populate(root: Path, initial: dict[str, bytes], tracked: int) -> None:
    """The saved files' first contents, and ``tracked`` small files that are never saved
    (a folder of realistic size: what git has to look at for every commit grows with it)."""
    for name, data in initial.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for index in range(tracked):
        path = root / f"archive/box-{index // 100:04d}/item-{index:06d}.txt"
        if index % 100 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"archived item {index}\n".encode())


def run_saves(
    root: Path,
    saves: Sequence[Save],
    chunks: int,
    timeout: float,
    seen: Callable[[Save, bytes, float], float | None],
    phase: Phase,
    label: str,
) -> list[bytes]:
    """Write every save; ``seen`` waits until it is recorded and returns its latency."""
    hashes = []
    started = time.perf_counter()
    for number, save in enumerate(saves, 1):
        data = save.content()
        hashes.append(sha256(data))
        opened, closed = write_in_chunks(root / save.path, data, chunks, save.pauses)
        phase.opens.append(opened)
        phase.closes.append(closed)
        phase.closes_wall.append(time.time() - (time.perf_counter() - closed))
        phase.latencies.append(seen(save, data, closed))
        if phase.latencies[-1] is None:
            print(f"  {label}: save {number} ({save.path}) not seen within {timeout:.0f} s")
        if number % 50 == 0:
            print(f"  {label}: {number}/{len(saves)} saves", flush=True)
        time.sleep(save.gap)
    phase.wall_s = time.perf_counter() - started
    return hashes


# ------------------------------------------------------------------ the agent


@dataclass
class AgentRun:
    phase: Phase
    versions: dict[str, list[str]]  # every version's SHA-256 per file, oldest first
    summary: LogSummary
    commits: int
    imported: int  # saved files whose first content the server recorded at the import
    actions: dict[str, int]  # audit events other than version.recorded during the saves


def measure_agent(server, tmp: Path, initial, saves, args, share: MachineShare) -> AgentRun:
    root = tmp / "agent-share"
    populate(root, initial, args.tracked)
    phase = Phase()
    with running_agent(server, root, tmp / "agent-state", keep_log=args.agent_log) as agent:
        ready = agent.wait_for_log(AGENT_MODE_RE, 120)
        folder = ready["folder"]
        client = server.client()
        try:

            def latest(path: str) -> str | None:
                response = client.get(
                    "/api/v1/documents/lookup", params={"folder": folder, "path": path}
                )
                if response.status_code == 404:
                    return None
                response.raise_for_status()
                return response.json()["latest"]["sha256"]

            for name, data in initial.items():
                expected = sha256(data)
                if not wait_until(
                    lambda n=name, e=expected: REFUSED in agent.log_text() or latest(n) == e,
                    args.timeout + args.tracked / 50,
                    0.05,
                ):
                    raise RuntimeError(f"the agent did not import {name} in time")
            if REFUSED in agent.log_text():
                print(
                    "  agent: it set its import's reports aside as refused (see its log below); "
                    "the saves go on",
                    flush=True,
                )
            tail = AuditTail(server)  # from here on: the saves' events only

            def seen(save: Save, data: bytes, closed: float) -> float | None:
                expected = sha256(data)
                deadline = closed + args.timeout
                while time.perf_counter() < deadline:
                    phase.lookups += 1
                    if latest(save.path) == expected:
                        return time.perf_counter() - closed
                    time.sleep(args.poll_ms / 1000)
                return None

            agent_cpu, server_cpu = cpu_s(agent.pid), cpu_s(server.process.pid)
            print(f"agent: {shown_command(agent)} ({ready['mode']})", flush=True)
            with share.timing(agent=agent.pid, server=server.process.pid):
                run_saves(root, saves, args.chunks, args.timeout, seen, phase, "agent")
            phase.cpu_s = _delta(agent_cpu, cpu_s(agent.pid))
            phase.server_cpu_s = _delta(server_cpu, cpu_s(server.process.pid))
            # Whatever the agent still records after the last save counts too.
            time.sleep(1.0)
            tail.poll()
            versions = {}
            for name in initial:
                document = client.get(
                    "/api/v1/documents/lookup", params={"folder": folder, "path": name}
                )
                if document.status_code == 404:
                    versions[name] = []
                    continue
                document.raise_for_status()
                listed = client.get(f"/api/v1/documents/{document.json()['id']}/versions")
                listed.raise_for_status()
                versions[name] = [v["sha256"] for v in listed.json()["versions"]]
            tail.close()
        finally:
            client.close()
        summary = agent.summary()
        commits = agent.commit_count()
        logged = logged_commits(agent.log_text())
    for save, closed in zip(saves, phase.closes_wall, strict=True):
        # The first commit logged after the close that names the file.
        at = next((c.at for c in logged if c.at >= closed - 0.001 and save.path in c.what), None)
        phase.committed.append(None if at is None else max(0.0, at - closed))
    imported = sum(
        bool(versions[name]) and versions[name][0] == sha256(data) for name, data in initial.items()
    )
    return AgentRun(phase, versions, summary, commits, imported, tail.other_actions)


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


# ------------------------------------------------------------------ baseline


@dataclass
class NaiveCommit:
    started: float
    finished: float


class NaiveCommitter(threading.Thread):
    """gitwatch with no delay: ``git add -A && git commit`` whenever a file changed.

    Changes are seen by polling every file's (mtime, size) each millisecond, which is
    what inotifywait would report, a little later.
    """

    def __init__(self, root: Path, names: Sequence[str]) -> None:
        super().__init__(name="naive-committer", daemon=True)
        self.root = root
        self.paths = [root / name for name in names]
        self.stop = threading.Event()
        self.commits: list[NaiveCommit] = []
        self.failures: list[str] = []
        self.done: tuple | None = None  # the files' state the last finished commit looked at

    def signature(self) -> tuple:
        result = []
        for path in self.paths:
            try:
                info = path.stat()
                result.append((info.st_mtime_ns, info.st_size))
            except OSError:
                result.append(None)
        return tuple(result)

    def run(self) -> None:
        last = self.signature()
        while not self.stop.is_set():
            current = self.signature()
            if current == last:
                time.sleep(0.001)
                continue
            last = current
            started = time.perf_counter()
            added = plain_git(self.root, "add", "-A", check=False)
            committed = plain_git(self.root, "commit", "-q", "-m", "auto", check=False)
            finished = time.perf_counter()
            if added.returncode != 0:
                self.failures.append(added.stderr.decode(errors="replace").strip())
            elif committed.returncode == 0:
                self.commits.append(NaiveCommit(started, finished))
            self.done = current


def measure_baseline(tmp: Path, initial, saves, args, share: MachineShare) -> tuple[Phase, dict]:
    root = tmp / "naive-copy"
    populate(root, initial, args.tracked)
    plain_git(root, "init", "-q")
    plain_git(root, "add", "-A")
    plain_git(root, "commit", "-q", "-m", "initial")
    committer = NaiveCommitter(root, list(initial))
    phase = Phase()

    def seen(save: Save, data: bytes, closed: float) -> float | None:
        # Wait until the committer has looked at the files as they are now (complete):
        # its commit then holds these bytes. The exact latency (which commit first held
        # them) is worked out from the history afterwards.
        final = committer.signature()
        if not wait_until(lambda: committer.done == final, args.timeout, 0.001):
            return None
        return 0.0

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = usage.ru_utime + usage.ru_stime
    committer.start()
    try:
        with share.timing():
            run_saves(root, saves, args.chunks, args.timeout, seen, phase, "baseline")
    finally:
        committer.stop.set()
        committer.join(30)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    phase.cpu_s = usage.ru_utime + usage.ru_stime - before
    if committer.failures:
        print(
            f"  baseline: {len(committer.failures)} `git add` failures, first: "
            f"{committer.failures[0]}"
        )

    # Which blob each commit gave each path, oldest first (the initial commit left out).
    log = plain_git(
        root, "log", "--reverse", "--raw", "--no-abbrev", "--format=commit %H"
    ).stdout.decode()
    changed: list[dict[str, str]] = []
    for line in log.splitlines():
        if line.startswith("commit "):
            changed.append({})
        elif line.startswith(":"):
            meta, path = line.split("\t", 1)
            changed[-1][path] = meta.split()[3]
    changed = changed[1:]
    if len(changed) != len(committer.commits):
        raise RuntimeError(
            f"baseline: {len(changed)} commits in git, {len(committer.commits)} timed"
        )
    complete = {name: {git_blob_id(data)} for name, data in initial.items()}
    for save in saves:
        complete[save.path].add(git_blob_id(save.content()))
    partial_commits = sum(
        any(blob not in complete[path] for path, blob in blobs.items()) for blobs in changed
    )
    # Exact latency: the first commit finished after the close that holds the bytes.
    for index, save in enumerate(saves):
        if phase.latencies[index] is None:
            continue
        blob = git_blob_id(save.content())
        opened, closed = phase.opens[index], phase.closes[index]
        for commit, blobs in zip(committer.commits, changed, strict=True):
            if commit.finished >= opened and blobs.get(save.path) == blob:
                phase.latencies[index] = max(0.0, commit.finished - closed)
                break
    per_commit = [c.finished - c.started for c in committer.commits]
    return phase, {
        "commits": len(committer.commits),
        "partial_commits": partial_commits,
        "per_commit": per_commit,
    }


# ------------------------------------------------------------------ report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=200, help="saves to time (default 200)")
    parser.add_argument("--files", type=int, default=3, help="files saved in turn (default 3)")
    parser.add_argument("--min-kb", type=int, default=50, help="smallest save (default 50 KB)")
    parser.add_argument("--max-kb", type=int, default=500, help="largest save (default 500 KB)")
    parser.add_argument("--chunks", type=int, default=5, help="writes per save (default 5)")
    parser.add_argument(
        "--max-pause-ms",
        type=float,
        default=120,
        help="longest pause between two chunks (default 120 ms; the agent settles after 80)",
    )
    parser.add_argument(
        "--max-gap-ms", type=float, default=50, help="longest quiet between saves (default 50)"
    )
    parser.add_argument(
        "--poll-ms", type=float, default=1, help="sleep between two lookups (default 1 ms)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10, help="give up on one save after this (default 10 s)"
    )
    parser.add_argument(
        "--tracked",
        type=int,
        default=0,
        help="small files in the folder that are never saved, to see how a larger folder "
        "slows each commit (default 0)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for sizes and bytes")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive committer")
    add_server_options(parser)
    add_agent_options(parser)
    args = parser.parse_args(argv)
    for name, low, high in (
        ("saves", 1, 10_000),
        ("files", 1, 100),
        ("min_kb", 1, 100_000),
        ("max_kb", args.min_kb, 100_000),
        ("chunks", 1, 1000),
        ("tracked", 0, 200_000),
    ):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be between {low} and {high}")

    initial, saves = plan(args)
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.database_url))
        database = describe_database(url)
        server = stack.enter_context(running_server(url, workers=args.workers))
        tmp = stack.enter_context(scratch_dir())
        share = MachineShare()
        base = base_extra = None
        if not args.no_baseline:
            print("baseline: naive auto-committer on a plain repository ...", flush=True)
            base, base_extra = measure_baseline(tmp, initial, saves, args, share)
        print("agent ...", flush=True)
        run = measure_agent(server, tmp, initial, saves, args, share)
    agent, versions, summary = run.phase, run.versions, run.summary

    complete = {sha256(data) for data in initial.values()} | {
        sha256(save.content()) for save in saves
    }
    recorded = [sha for shas in versions.values() for sha in shas]
    partial = sum(sha not in complete for sha in recorded)
    expected_versions = run.imported + len(saves)
    missing = sum(sha256(save.content()) not in versions[save.path] for save in saves)
    print()
    print(
        environment_line(database, args.workers) + "; agent: `officium agent` in its own "
        f"process ({summary.mode})"
    )
    writes = [c - o for o, c in zip(agent.opens, agent.closes, strict=True)]
    if args.tracked:
        print(f"the folder also holds {args.tracked} small files that are never saved")
    print(
        f"{len(saves)} saves over {args.files} file(s) of {args.min_kb}-{args.max_kb} KB "
        f"(random bytes), each written through one open file in {args.chunks} flushed chunks "
        f"with pauses of 5-{args.max_pause_ms:.0f} ms (median write {seconds(median(writes))}); "
        f"the next save 0-{args.max_gap_ms:.0f} ms after the previous one was seen; "
        f"lookups every {args.poll_ms:g} ms"
    )
    print()

    def stats(values: Sequence[float | None]) -> tuple[float, float, int]:
        seen = [v for v in values if v is not None]
        lost = len(values) - len(seen)
        # A save never seen counts as slower than anything seen.
        seen += [math.inf] * lost
        return median(seen), percentile(seen, 99), lost

    def per_save_ms(cpu: float | None) -> str:
        return "n/a" if cpu is None else f"{cpu / len(saves) * 1000:.1f} ms"

    a_med, a_p99, a_lost = stats(agent.latencies)
    c_med, c_p99, _ = stats(agent.committed)
    b_med = b_p99 = None
    b_lost = 0
    if base is not None:
        b_med, b_p99, b_lost = stats(base.latencies)
    rows = [
        ("save → recorded on the server, median", seconds(a_med), "", ""),
        ("save → recorded on the server, p99", seconds(a_p99), "", ""),
        ("save → git commit, median", seconds(c_med), seconds(b_med), ratio(c_med, b_med)),
        ("save → git commit, p99", seconds(c_p99), seconds(b_p99), ratio(c_p99, b_p99)),
        ("saves never seen (10 s timeout)", str(a_lost), str(b_lost), ""),
        (
            "versions / commits made",
            f"{len(recorded) - run.imported} versions, {run.commits - 1} commits",
            "" if base is None else f"{base_extra['commits']} commits",
            "" if base is None else ratio(run.commits - 1, base_extra["commits"]),
        ),
        (
            "holding half-written content",
            f"{partial} of {len(recorded)} versions",
            ""
            if base is None
            else f"{base_extra['partial_commits']} of {base_extra['commits']} commits",
            "",
        ),
        (
            "CPU per save (agent with its git commands; committer's git)",
            per_save_ms(agent.cpu_s),
            "" if base is None else per_save_ms(base.cpu_s),
            "" if base is None else ratio(agent.cpu_s, base.cpu_s),
        ),
        (
            "server CPU per save (with this bench's lookups)",
            per_save_ms(agent.server_cpu_s),
            "",
            "",
        ),
    ]
    print(
        fixed_width(
            ["figure", "officium agent", "naive committer (baseline)", "ratio"],
            [list(row) for row in rows],
        )
    )
    print(
        "'save' is the close of the file; the agent's commit times come from its log "
        "(millisecond stamps); the server's from the first lookup that answered the new "
        f"bytes ({agent.lookups} lookups in all)"
    )
    if base is not None:
        print(
            "baseline: `git add -A && git commit -q` whenever a file's mtime or size changed "
            f"(gitwatch with no delay), run concurrently with the writer in a plain "
            f"repository of a copy: {seconds(median(base_extra['per_commit']))} per commit "
            f"(median), {seconds(percentile(base_extra['per_commit'], 99))} p99"
        )
    print(share.line())
    slowest = sorted(range(len(saves)), key=lambda i: -(agent.latencies[i] or math.inf))[:5]
    print(
        "agent's slowest saves (to the server | to the git commit, size): "
        + "; ".join(
            f"{seconds(agent.latencies[i])} | {seconds(agent.committed[i])}, "
            f"{saves[i].size // 1024} KB"
            for i in slowest
        )
    )
    print(
        f"agent: {run.commits} git commits, {len(recorded)} versions on the server "
        f"({expected_versions} expected), {missing} save(s) never recorded as a version; "
        f"log: {summary.recorded_lines} 'recorded' lines, {summary.warnings} warnings, "
        f"{summary.errors} errors"
    )
    if run.actions:
        print(f"agent: other register events during the saves: {run.actions}")
    for line in summary.notable[:10]:
        print(f"  agent log: {line}")
    print()
    checks = [
        ["median save → recorded ≤ 0.3 s", seconds(a_med), verdict(a_med <= MEDIAN_BAR_S)],
        ["p99 save → recorded ≤ 1 s", seconds(a_p99), verdict(a_p99 <= P99_BAR_S)],
        [
            "never a half-written file recorded",
            f"{partial} partial version(s)",
            verdict(partial == 0),
        ],
    ]
    print(fixed_width(["DESIGN §6 bar", "measured", "result"], checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
