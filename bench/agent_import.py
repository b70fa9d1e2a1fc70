"""Import bench: the agent's first start on a folder of 10,000 files, against a plain
``git add -A && git commit`` of a copy of the same folder.

Generates ``--files`` (10,000) files of random bytes (``--min-kb``-``--max-kb``, 1-64 KB,
incompressible like office files) in nested folders, then:

- baseline: copies the folder and times ``git init -q && git add -A && git commit -q``
  there (the page cache is flushed with ``sync`` before each timed phase, so neither
  pays for the other's writes);
- the agent: starts ``officium agent`` (a separate process) on the original folder and
  times, from the moment the process is spawned, (1) until the agent's repository (in
  its state directory) has a commit, read from the ref files every 20 ms; the agent's
  own figure, the 'start-up reconcile took X s' of its log, is shown beside it; and
  (2) until every file is a recorded version on the server, followed through the
  server's audit trail and checked against the register at the end.

The ratio of (1) to the baseline is the DESIGN §6 bar (≤ 1.5×); (2) is printed as is.

    .venv/bin/python bench/agent_import.py [--files 10000] [--dirs 100]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from _agent_common import (
    AGENT_MODE_RE,
    REFUSED,
    AuditTail,
    MachineShare,
    add_agent_options,
    documents,
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

# DESIGN §6, "import": the first import ≤ 1.5× a plain `git add -A && git commit`.
IMPORT_BAR = 1.5


def generate(root: Path, args: argparse.Namespace) -> dict[str, str]:
    """Write the folder; return each file's SHA-256 by path."""
    rng = random.Random(args.seed)
    tops = max(1, round(args.dirs**0.5))
    folders = [f"dept-{i % tops:02d}/project-{i:03d}" for i in range(args.dirs)]
    hashes = {}
    for index in range(args.files):
        name = f"{folders[index % len(folders)]}/doc-{index:05d}.docx"
        data = rng.randbytes(rng.randint(args.min_kb * 1024, args.max_kb * 1024))
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        hashes[name] = sha256(data)
    return hashes


def baseline(source: Path, copy: Path) -> float:
    shutil.copytree(source, copy)
    os.sync()
    started = time.perf_counter()
    plain_git(copy, "init", "-q")
    plain_git(copy, "add", "-A")
    plain_git(copy, "commit", "-q", "-m", "import")
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="files (default 10000)")
    parser.add_argument("--dirs", type=int, default=100, help="folders (default 100)")
    parser.add_argument("--min-kb", type=int, default=1, help="smallest file (default 1 KB)")
    parser.add_argument("--max-kb", type=int, default=64, help="largest file (default 64 KB)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600,
        help="give up waiting for the server after this (default 600 s)",
    )
    parser.add_argument(
        "--poll-ms", type=float, default=250, help="audit trail polling interval (default 250)"
    )
    parser.add_argument(
        "--commit-only",
        action="store_true",
        help="stop once the agent has committed (skip waiting for the server)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for sizes and bytes")
    add_server_options(parser)
    add_agent_options(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.files <= 200_000 or not 1 <= args.dirs <= args.files:
        parser.error("--files must be 1-200000 and --dirs 1-files")
    if not 1 <= args.min_kb <= args.max_kb <= 100_000:
        parser.error("need 1 ≤ --min-kb ≤ --max-kb ≤ 100000")

    share = MachineShare()
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.database_url))
        database = describe_database(url)
        server = stack.enter_context(running_server(url, workers=args.workers))
        tmp = stack.enter_context(scratch_dir())
        root = tmp / "share"
        print(f"generating {args.files} files ...", flush=True)
        started = time.perf_counter()
        expected = generate(root, args)
        total_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(
            f"generated {total_bytes / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        print("baseline: git init && git add -A && git commit of a copy ...", flush=True)
        with share.timing():
            base_s = baseline(root, tmp / "plain-copy")
        shutil.rmtree(tmp / "plain-copy")
        os.sync()
        tail = AuditTail(server)
        stack.callback(tail.close)
        print("agent: first start ...", flush=True)
        agent = stack.enter_context(
            running_agent(server, root, tmp / "state", keep_log=args.agent_log)
        )
        committed = reported = refused_after = None
        seen: set[str] = set()
        with share.timing(agent=agent.pid, server=server.process.pid):
            while committed is None:
                if agent.has_head():
                    committed = time.perf_counter() - agent.spawned
                elif agent.process.poll() is not None:
                    raise RuntimeError(f"the agent exited:\n{agent.tail()}")
                elif time.perf_counter() - agent.spawned > args.timeout:
                    raise TimeoutError(f"no commit within {args.timeout:.0f} s:\n{agent.tail()}")
                else:
                    time.sleep(0.02)
            ready = agent.wait_for_log(AGENT_MODE_RE, args.timeout)
            print(
                f"agent: committed after {committed:.2f} s; {shown_command(agent)} "
                f"({ready['mode']})",
                flush=True,
            )
            if not args.commit_only:
                deadline = agent.spawned + args.timeout
                next_note = time.perf_counter() + 15
                while time.perf_counter() < deadline:
                    seen.update(r.path for r in tail.poll())
                    if seen >= expected.keys():
                        reported = max(r.seen for r in tail.recorded) - agent.spawned
                        break
                    if REFUSED in agent.log_text():
                        refused_after = time.perf_counter() - agent.spawned
                        print("  the agent set reports aside as refused: not waiting longer")
                        break
                    if time.perf_counter() > next_note:
                        print(f"  {len(seen)}/{len(expected)} recorded on the server", flush=True)
                        next_note += 15
                    time.sleep(args.poll_ms / 1000)
        summary = agent.summary()
        commits = agent.commit_count()
        listed = documents(server, ready["folder"]) if not args.commit_only else []

    by_path = {doc["path"]: doc for doc in listed}
    lost = len(set(expected) - set(by_path))
    wrong = sum(1 for p, doc in by_path.items() if expected.get(p) != doc["latest"]["sha256"])
    twice = sum(1 for doc in listed if doc["latest"]["number"] > 1)
    print()
    print(
        environment_line(database, args.workers) + "; agent: `officium agent` in its own "
        f"process ({summary.mode})"
    )
    print(
        f"{len(expected)} files, {total_bytes / 1e6:.0f} MB of random bytes "
        f"({args.min_kb}-{args.max_kb} KB each) in {args.dirs} folders; git {_git_version()}"
    )
    print(share.line())
    print()
    rows = [
        [
            "start → first commit (from spawning the process)",
            seconds(committed),
            seconds(base_s),
            ratio(committed, base_s),
        ],
        [
            "  the agent's own 'start-up reconcile took'",
            seconds(summary.reconcile_s),
            seconds(base_s),
            ratio(summary.reconcile_s, base_s),
        ],
        [
            "start → all reported on the server",
            "skipped"
            if args.commit_only
            else seconds(reported)
            if reported
            else f"never: refused after {refused_after:.1f} s"
            if refused_after
            else "timeout",
            "",
            "" if not reported else ratio(reported, base_s),
        ],
        [
            "  reported per second after the commit",
            ""
            if not reported
            else f"{len(expected) / (reported - committed):.0f} files/s, "
            f"{total_bytes / 1e6 / (reported - committed):.1f} MB/s",
            "",
            "",
        ],
        ["git commits", str(commits), "1", ""],
    ]
    if not args.commit_only:
        rows.append(
            [
                "on the server: documents / lost / several versions / wrong bytes",
                f"{len(listed)} / {lost} / {twice} / {wrong}",
                "",
                "",
            ]
        )
    print(
        fixed_width(
            [
                "figure",
                "officium agent",
                "git init && git add -A && git commit (baseline)",
                "ratio",
            ],
            rows,
        )
    )
    print(
        f"agent log: {summary.recorded_lines} 'recorded' lines, {summary.warnings} warnings, "
        f"{summary.errors} errors, {summary.rescans} rescan(s)"
    )
    for line in summary.notable[:10]:
        print(f"  agent log: {line}")
    print()
    checks = [
        [
            "first import ≤ 1.5× `git add -A && git commit`",
            f"{ratio(committed, base_s)} ({seconds(committed)} vs {seconds(base_s)})",
            verdict(committed is not None and committed <= IMPORT_BAR * base_s),
        ]
    ]
    if not args.commit_only:
        checks.append(
            [
                "every file recorded once",
                f"{lost} lost, {twice} twice, {wrong} wrong",
                verdict(lost == 0 and twice == 0 and wrong == 0),
            ]
        )
    print(fixed_width(["DESIGN §6 bar", "measured", "result"], checks))
    return 0


def _git_version() -> str:
    return plain_git(Path.cwd(), "--version").stdout.decode().split()[-1]


if __name__ == "__main__":
    sys.exit(main())
