"""Burst bench: a thousand files written within a second, each recorded exactly once.

Starts a real server (``officium serve``) and a real agent (``officium agent``, a separate
process) on an empty folder, then writes ``--files`` (1,000) small files of random bytes
at an even pace over ``--spread`` (1 s). From the close of the last file it follows the
server's audit trail (new ``version.recorded`` events only, a cheap query however large
the register grows) until every file is recorded: that is the time measured. It then
waits ``--linger`` seconds more for late duplicates and checks the register itself: one
document per file, exactly one version each, holding the bytes written (lost,
duplicated, wrong). The agent's git commits and what its log says (inotify overflows,
rescans, warnings) are printed too.

Baseline, same run, same files: ``git add -A && git commit`` of a copy of them in a
plain repository (what gitwatch runs once its delay is over), timed from the start of
``git add`` to the end of ``git commit``.

    .venv/bin/python bench/agent_burst.py [--files 1000] [--spread 1.0] [--new-folder]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from _agent_common import (
    AGENT_MODE_RE,
    AuditTail,
    MachineShare,
    add_agent_options,
    documents,
    logged_commits,
    plain_git,
    ratio,
    running_agent,
    scratch_dir,
    seconds,
    shown_command,
    verdict,
)
from _common import (  # bench/ is on sys.path when a bench runs as a script
    add_server_options,
    describe_database,
    environment_line,
    fixed_width,
    running_server,
    scratch_database,
    sha256,
)

# DESIGN §6, "bursts": every file recorded once, within 5 s of the last write.
BURST_BAR_S = 5.0


def plan(args: argparse.Namespace) -> dict[str, bytes]:
    rng = random.Random(args.seed)
    prefix = "incoming/" if args.new_folder else ""
    return {
        f"{prefix}scan-{i:05d}.pdf": rng.randbytes(rng.randint(args.min_bytes, args.max_bytes))
        for i in range(args.files)
    }


def write_burst(root: Path, files: dict[str, bytes], spread: float, new_folder: bool) -> float:
    """Write every file at an even pace over ``spread`` seconds; return when the last closed."""
    started = time.perf_counter()
    if new_folder:
        (root / "incoming").mkdir()
    step = spread / max(1, len(files) - 1)
    for index, (name, data) in enumerate(files.items()):
        delay = started + index * step - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with open(root / name, "wb") as handle:
            handle.write(data)
    return time.perf_counter()


def baseline(tmp: Path, files: dict[str, bytes]) -> float:
    root = tmp / "plain-copy"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    plain_git(root, "init", "-q")
    os.sync()  # the copy's dirty pages are not flushed during the timed commit
    started = time.perf_counter()
    plain_git(root, "add", "-A")
    plain_git(root, "commit", "-q", "-m", "burst")
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="files written (default 1000)")
    parser.add_argument(
        "--spread", type=float, default=1.0, help="seconds the writes take (default 1.0)"
    )
    parser.add_argument("--min-bytes", type=int, default=200, help="smallest file (default 200)")
    parser.add_argument("--max-bytes", type=int, default=8192, help="largest file (default 8192)")
    parser.add_argument(
        "--new-folder",
        action="store_true",
        help="write the files into a folder created at the start of the burst (a folder "
        "copied in), instead of the watched folder's top level",
    )
    parser.add_argument(
        "--timeout", type=float, default=60, help="give up waiting after this (default 60 s)"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=3,
        help="seconds to keep watching for late duplicates once all are recorded (default 3)",
    )
    parser.add_argument(
        "--poll-ms", type=float, default=20, help="audit trail polling interval (default 20)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for sizes and bytes")
    add_server_options(parser)
    add_agent_options(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.files <= 100_000:
        parser.error("--files must be between 1 and 100000")
    if not 0 <= args.spread <= 60 or not 1 <= args.min_bytes <= args.max_bytes <= 10_000_000:
        parser.error("--spread must be 0-60 s and 1 ≤ --min-bytes ≤ --max-bytes ≤ 10 MB")

    files = plan(args)
    expected = {name: sha256(data) for name, data in files.items()}
    share = MachineShare()
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.database_url))
        database = describe_database(url)
        server = stack.enter_context(running_server(url, workers=args.workers))
        tmp = stack.enter_context(scratch_dir())
        print("baseline: git add -A && git commit of a copy ...", flush=True)
        with share.timing():
            base_s = baseline(tmp, files)
        root = tmp / "share"
        root.mkdir()
        agent = stack.enter_context(
            running_agent(server, root, tmp / "state", keep_log=args.agent_log)
        )
        ready = agent.wait_for_log(AGENT_MODE_RE, 120)
        folder = ready["folder"]
        print(f"agent: {shown_command(agent)} ({ready['mode']})", flush=True)
        tail = AuditTail(server)
        stack.callback(tail.close)
        print(f"writing {len(files)} files over {args.spread:g} s ...", flush=True)
        with share.timing(agent=agent.pid, server=server.process.pid):
            burst_started = time.perf_counter()
            last_write = write_burst(root, files, args.spread, args.new_folder)
            last_write_wall = time.time()
            all_seen = None
            first_seen = None
            deadline = last_write + args.timeout
            while time.perf_counter() < deadline:
                new = tail.poll()
                if new and first_seen is None:
                    first_seen = new[0].seen
                if {r.path for r in tail.recorded} >= expected.keys():
                    all_seen = max(r.seen for r in tail.recorded if r.path in expected)
                    break
                time.sleep(args.poll_ms / 1000)
        print("all seen; lingering for late duplicates ..." if all_seen else "timed out")
        time.sleep(args.linger)
        tail.poll()
        listed = documents(server, folder)
        commits = agent.commit_count()
        summary = agent.summary()
        logged = logged_commits(agent.log_text())

    # ----------------------------------------------------------------- figures
    by_path = {doc["path"]: doc for doc in listed}
    lost = sorted(set(expected) - set(by_path))
    extra_documents = sorted(set(by_path) - set(expected))
    multi_version = sorted(p for p, doc in by_path.items() if doc["latest"]["number"] > 1)
    wrong = sorted(
        p for p, doc in by_path.items() if p in expected and doc["latest"]["sha256"] != expected[p]
    )
    recorded_events = Counter(r.path for r in tail.recorded)
    recorded_twice = sorted(p for p, n in recorded_events.items() if n > 1)
    duplicated = len(set(multi_version) | set(recorded_twice)) + len(extra_documents)
    elapsed = None if all_seen is None else all_seen - last_write
    burst_commits = [c for c in logged if c.at >= last_write_wall - (last_write - burst_started)]
    last_commit = max(c.at for c in burst_commits) - last_write_wall if burst_commits else None

    print()
    print(
        environment_line(database, args.workers) + "; agent: `officium agent` in its own "
        f"process ({summary.mode})"
    )
    print(
        f"{len(files)} files of {args.min_bytes}-{args.max_bytes} bytes (random) written in "
        f"{last_write - burst_started:.2f} s "
        + ("into a folder created at the start" if args.new_folder else "at the top level")
        + f"; the audit trail polled every {args.poll_ms:g} ms"
    )
    print(share.line())
    print()
    rows = [
        [
            "last write → all recorded on the server",
            seconds(elapsed) if elapsed is not None else f"not within {args.timeout:g} s",
            seconds(base_s),
            ratio(elapsed, base_s),
        ],
        [
            "last write → last git commit (agent log)",
            seconds(last_commit),
            seconds(base_s),
            ratio(last_commit, base_s),
        ],
        [
            "first write → first version on the server",
            seconds(None if first_seen is None else first_seen - burst_started),
            "",
            "",
        ],
        ["git commits", str(commits), "1", ""],
        [
            "documents on the server / versions recorded",
            f"{len(listed)} / {len(tail.recorded)}",
            "",
            "",
        ],
        ["lost (no document)", str(len(lost)), "", ""],
        [
            "duplicated (versions > 1, recorded twice, or unplanned documents)",
            str(duplicated),
            "",
            "",
        ],
        ["latest version not the bytes written", str(len(wrong)), "", ""],
    ]
    print(
        fixed_width(
            ["figure", "officium agent", "git add -A && git commit (baseline)", "ratio"], rows
        )
    )
    print(
        f"agent log: {summary.recorded_lines} 'recorded' lines, {summary.overflows} inotify "
        f"overflow(s), {summary.rescans} rescan(s), {summary.warnings} warnings, "
        f"{summary.errors} errors"
    )
    if tail.other_actions:
        print(f"other register events: {dict(tail.other_actions)}")
    for label, paths in (
        ("lost", lost),
        ("with several versions", multi_version),
        ("recorded twice", recorded_twice),
        ("unplanned documents", extra_documents),
        ("wrong bytes", wrong),
    ):
        if paths:
            print(f"  {label}: {len(paths)}, e.g. {', '.join(paths[:5])}")
    for line in summary.notable[:10]:
        print(f"  agent log: {line}")
    print()
    ok_time = elapsed is not None and elapsed <= BURST_BAR_S
    once = not lost and not duplicated and not wrong
    checks = [
        [
            "every file recorded within 5 s of the last write",
            seconds(elapsed) if elapsed is not None else "timeout",
            verdict(ok_time),
        ],
        [
            "every file recorded once (none lost, none twice)",
            f"{len(lost)} lost, {duplicated} duplicated, {len(wrong)} wrong",
            verdict(once),
        ],
    ]
    print(fixed_width(["DESIGN §6 bar", "measured", "result"], checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
