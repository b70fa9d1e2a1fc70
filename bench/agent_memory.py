"""Memory bench: the agent's resident memory while it watches 100,000 files.

Starts a real server (``officium serve``) and real agents (``officium agent``, separate
processes, so their memory is their own). Two baselines, same run: a plain Python process
that imports what the agent is built on (``import watchdog, git, httpx, pydantic``) and
sits idle, and an agent watching an empty folder. Then an agent on a folder of
``--files`` (100,000) empty files in ``--dirs`` (1,000) folders: its first import is
followed (the commit in its repository, then its outbox draining or ``--report-wait``
seconds, whichever comes first), then its RSS (``VmRSS`` of /proc/PID/status) is sampled
for ``--sample`` seconds while idle, then ``--saves`` (200) files are saved, and once the
agent has committed them its RSS is sampled again. The peak (``VmHWM``), the git
processes it keeps as children, and the number of inotify watches it holds (from
/proc/PID/fdinfo) are printed too, with the mode it logged (inotify, or polling if
``fs.inotify.max_user_watches`` was too low for the folders).

    .venv/bin/python bench/agent_memory.py [--files 100000] [--dirs 1000] [--poll]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from _agent_common import (
    AGENT_MODE_RE,
    Agent,
    AuditTail,
    MachineShare,
    add_agent_options,
    children,
    logged_commits,
    ratio,
    rss_kb,
    running_agent,
    scratch_dir,
    shown_command,
    stop_process,
    wait_until,
)
from _common import (  # bench/ is on sys.path when a bench runs as a script
    add_server_options,
    describe_database,
    environment_line,
    fixed_width,
    median,
    running_server,
    scratch_database,
    sha256,
)

BARE_IMPORTS = "import watchdog, git, httpx, pydantic, sys; sys.stdin.read()"


@dataclass
class Samples:
    """RSS samples of one process over a quiet interval (KiB)."""

    values: list[int]

    @property
    def median_mb(self) -> float:
        return median(self.values) / 1024

    @property
    def max_mb(self) -> float:
        return max(self.values) / 1024

    def cell(self) -> str:
        return f"{self.median_mb:.1f} MB (max {self.max_mb:.1f})"


def sample(pid: int, seconds: float, every: float = 0.25) -> Samples:
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = rss_kb(pid)
        if value is None:
            raise RuntimeError(f"process {pid} is gone")
        values.append(value)
        time.sleep(every)
    return Samples(values)


def inotify_watches(pid: int) -> int | None:
    """How many inotify watches the process holds (lines of its inotify fds' fdinfo)."""
    count, found = 0, False
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            found = True
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue
        count += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return count if found else None


def git_children(pid: int) -> tuple[int, float]:
    """The agent's live child processes (git's object readers) and their RSS in MB."""
    kids = children(pid)
    return len(kids), sum(rss_kb(kid) or 0 for kid in kids) / 1024


def outbox_state(agent: Agent) -> tuple[int, int] | None:
    """(pending reports, refused reports) in the agent's outbox, read-only."""
    found = sorted(agent.state_dir.glob("*/outbox.db"))
    if not found:
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{found[0]}?mode=ro", uri=True, timeout=5)
        ) as db:
            pending = db.execute(
                "SELECT coalesce(sum(json_array_length(reports)), 0) FROM pending"
            ).fetchone()[0]
            refused = db.execute(
                "SELECT coalesce(sum(json_array_length(reports)), 0) FROM refused"
            ).fetchone()[0]
    except sqlite3.Error:
        return None
    return pending, refused


def make_tree(root: Path, files: int, dirs: int, size: int) -> list[str]:
    names = []
    tops = max(1, round(dirs**0.5))
    folders = [f"area-{i % tops:02d}/case-{i:04d}" for i in range(dirs)]
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(files):
        name = f"{folders[index % dirs]}/file-{index:06d}.txt"
        with open(root / name, "wb") as handle:
            if size:
                handle.write(f"{index:0{size}d}"[-size:].encode())
        names.append(name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="files (default 100000)")
    parser.add_argument("--dirs", type=int, default=1000, help="folders (default 1000)")
    parser.add_argument(
        "--bytes",
        type=int,
        default=0,
        help="bytes per file (default 0: empty files, one content for the server; with N > 0 "
        "every file has its own bytes and the server gets one upload per file)",
    )
    parser.add_argument("--saves", type=int, default=200, help="saves after the import (200)")
    parser.add_argument(
        "--sample", type=float, default=10, help="seconds of RSS sampling per phase (default 10)"
    )
    parser.add_argument(
        "--report-wait",
        type=float,
        default=60,
        help="how long to let the agent report its import before sampling (default 60 s)",
    )
    parser.add_argument("--poll", action="store_true", help="run the agent with --poll")
    parser.add_argument(
        "--timeout", type=float, default=180, help="give up on the import after (default 180 s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for the saves")
    add_server_options(parser)
    add_agent_options(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.files <= 1_000_000 or not 1 <= args.dirs <= args.files:
        parser.error("--files must be 1-1000000 and --dirs 1-files")
    if not 0 <= args.bytes <= 1024 or not 0 <= args.saves <= args.files:
        parser.error("--bytes must be 0-1024 and --saves at most --files")

    max_watches = Path("/proc/sys/fs/inotify/max_user_watches").read_text().strip()
    extra = ["--poll"] if args.poll else []
    rng = random.Random(args.seed)
    share = MachineShare()
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.database_url))
        database = describe_database(url)
        server = stack.enter_context(running_server(url, workers=args.workers))
        tmp = stack.enter_context(scratch_dir())

        # Baseline 1: the agent's libraries, imported and idle.
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_IMPORTS], stdin=subprocess.PIPE, cwd=tmp
        )
        stack.callback(stop_process, bare)
        time.sleep(2.0)
        bare_rss = sample(bare.pid, min(args.sample, 3))
        bare.stdin.close()
        bare.wait(10)
        print(f"baseline: python with the agent's imports: {bare_rss.cell()}", flush=True)

        # Baseline 2: an agent watching an empty folder.
        empty = tmp / "empty"
        empty.mkdir()
        with running_agent(
            server, empty, tmp / "empty-state", extra=extra, log_name="empty.log"
        ) as idle:
            idle.wait_for_log(AGENT_MODE_RE, 120)
            time.sleep(1.0)
            idle_rss = sample(idle.pid, min(args.sample, 5))
            idle_hwm = (rss_kb(idle.pid, "VmHWM") or 0) / 1024
        print(f"baseline: agent watching an empty folder: {idle_rss.cell()}", flush=True)

        # The agent on the big folder.
        root = tmp / "big"
        print(f"creating {args.files} files in {args.dirs} folders ...", flush=True)
        started = time.perf_counter()
        names = make_tree(root, args.files, args.dirs, args.bytes)
        print(f"created in {time.perf_counter() - started:.1f} s", flush=True)
        tail = AuditTail(server)
        stack.callback(tail.close)
        agent = stack.enter_context(
            running_agent(
                server,
                root,
                tmp / "big-state",
                extra=extra,
                log_name="big.log",
                keep_log=args.agent_log,
            )
        )
        with share.timing(agent=agent.pid, server=server.process.pid):
            if not wait_until(agent.has_head, args.timeout, 0.05):
                raise TimeoutError(f"no import commit within {args.timeout:.0f} s:\n{agent.tail()}")
            committed = time.perf_counter() - agent.spawned
            ready = agent.wait_for_log(AGENT_MODE_RE, args.timeout)
            print(
                f"agent: import committed after {committed:.1f} s; {shown_command(agent)} "
                f"({ready['mode']})",
                flush=True,
            )
            drained = wait_until(
                lambda: (outbox_state(agent) or (1, 0))[0] == 0, args.report_wait, 0.5
            )
            outbox_after_import = outbox_state(agent)
            import_hwm = (rss_kb(agent.pid, "VmHWM") or 0) / 1024
            tail.poll()
            reported_after_import = len(tail.recorded)
            print(
                f"agent: outbox {'drained' if drained else 'still busy'} "
                f"(pending, refused reports: {outbox_after_import}); "
                f"{reported_after_import} versions on the server; sampling RSS ...",
                flush=True,
            )
            idle_after_import = sample(agent.pid, args.sample)
            kids_idle = git_children(agent.pid)
            watches = inotify_watches(agent.pid)

            chosen = {
                name: f"save {index} of the memory bench\n".encode()
                for index, name in enumerate(rng.sample(names, args.saves))
            }
            wanted = {name: sha256(data) for name, data in chosen.items()}
            logged_before = sum(c.count for c in logged_commits(agent.log_text()))
            saves_started = time.perf_counter()
            saves_wall = time.time()
            for name, data in chosen.items():
                (root / name).write_bytes(data)
                time.sleep(0.02)
            last_save_wall = time.time()
            saved = wait_until(
                lambda: (
                    sum(c.count for c in logged_commits(agent.log_text())) - logged_before
                    >= args.saves
                ),
                60,
                0.1,
            )
            committed_saves = sum(c.count for c in logged_commits(agent.log_text())) - logged_before
            saves_s = time.perf_counter() - saves_started

            def saves_reported() -> set[str]:
                tail.poll()
                return {r.path for r in tail.recorded if wanted.get(r.path) == r.sha256}

            wait_until(lambda: len(saves_reported()) == len(chosen), 20, 0.25)
            on_server = len(saves_reported())
            after_saves = sample(agent.pid, args.sample)
            kids_after = git_children(agent.pid)
            final_hwm = (rss_kb(agent.pid, "VmHWM") or 0) / 1024
        summary = agent.summary()
        save_commits = [c for c in logged_commits(agent.log_text()) if c.at >= saves_wall]

    print()
    print(
        environment_line(database, args.workers) + "; agents: `officium agent`, each in its "
        f"own process ({summary.mode})"
    )
    print(
        f"{args.files} {'empty' if not args.bytes else f'{args.bytes}-byte'} files in "
        f"{args.dirs} folders; fs.inotify.max_user_watches = {max_watches}; the agent holds "
        f"{watches if watches is not None else 'no'} inotify watches; mode logged: "
        f"{summary.mode}"
    )
    print(share.line())
    print()
    base_mb, idle_mb = bare_rss.median_mb, idle_rss.median_mb
    rows = [
        ["python + watchdog, git, httpx, pydantic (baseline 1)", bare_rss.cell(), "1.00×", ""],
        [
            "agent watching an empty folder (baseline 2)",
            idle_rss.cell() + f", peak {idle_hwm:.1f}",
            ratio(idle_mb, base_mb),
            "1.00×",
        ],
        [
            f"agent, {args.files} files: peak through the import and its reports (VmHWM)",
            f"{import_hwm:.1f} MB",
            ratio(import_hwm, base_mb),
            ratio(import_hwm, idle_mb),
        ],
        [
            f"agent, {args.files} files: idle after the import",
            idle_after_import.cell(),
            ratio(idle_after_import.median_mb, base_mb),
            ratio(idle_after_import.median_mb, idle_mb),
        ],
        [
            f"agent, {args.files} files: after {args.saves} saves",
            after_saves.cell(),
            ratio(after_saves.median_mb, base_mb),
            ratio(after_saves.median_mb, idle_mb),
        ],
        [
            "agent: peak over the whole run (VmHWM)",
            f"{final_hwm:.1f} MB",
            ratio(final_hwm, base_mb),
            ratio(final_hwm, idle_mb),
        ],
        [
            "agent's git child processes (idle; after saves)",
            f"{kids_idle[0]} ({kids_idle[1]:.1f} MB); {kids_after[0]} ({kids_after[1]:.1f} MB)",
            "",
            "",
        ],
    ]
    print(fixed_width(["RSS (median of samples)", "MB", "vs baseline 1", "vs baseline 2"], rows))
    print(
        f"import: committed {committed:.1f} s after the agent was spawned; after "
        f"{args.report_wait:g} s at most: outbox (pending, refused reports) = "
        f"{outbox_after_import}, {reported_after_import} versions on the server"
    )
    last_commit = max((c.at for c in save_commits), default=last_save_wall) - last_save_wall
    print(
        f"saves: {committed_saves} of {args.saves} committed "
        f"({'all' if saved else 'NOT all'}) within {saves_s:.1f} s of the first, in "
        f"{len(save_commits)} commits of {', '.join(str(c.count) for c in save_commits)} "
        f"changes; the last commit {last_commit:.2f} s "
        f"after the last save (one save every 20 ms); {on_server} of them on the server when "
        "sampled"
    )
    print(
        f"agent log: {summary.recorded_lines} 'recorded' lines, {summary.warnings} warnings, "
        f"{summary.errors} errors, {summary.overflows} overflow(s), {summary.rescans} rescan(s)"
    )
    for line in summary.notable[:10]:
        print(f"  agent log: {line[:300]}")
    print()
    print("DESIGN §6 sets no bar on memory; the figures above are for comparison across runs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
