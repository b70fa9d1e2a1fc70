"""What the agent benches share: a real ``officium agent`` in a subprocess next to a real
server, the register's progress read from the audit trail, plain-git baselines, and the
process figures (CPU, RSS) read from Linux's /proc.

The agent runs as ``officium agent FOLDER --server URL --token TOKEN --state-dir DIR``,
exactly as an operator starts it, its log in a file the bench reads (its mode, its
start-up reconcile, its warnings). Everything talks to 127.0.0.1; every wait is
bounded; every process started here is stopped and every temporary directory removed,
also on Ctrl-C or error.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from _common import LOOPBACK, Server

__all__ = [
    "AGENT_MODE_RE",
    "REFUSED",
    "Agent",
    "AuditTail",
    "LogSummary",
    "LoggedCommit",
    "MachineShare",
    "Recorded",
    "add_agent_options",
    "children",
    "cpu_s",
    "documents",
    "git_blob_id",
    "logged_commits",
    "plain_git",
    "plain_git_env",
    "ratio",
    "rss_kb",
    "running_agent",
    "scratch_dir",
    "seconds",
    "shown_command",
    "stop_process",
    "verdict",
    "wait_until",
    "write_in_chunks",
]

# What the agent logs when it gives up on a commit's reports for good.
REFUSED = "set aside in the outbox's 'refused' table"
AGENT_STOP_TIMEOUT_S = 20.0
# "watching /tmp/x as folder 'x' (inotify); start-up reconcile took 0.12 s"
AGENT_MODE_RE = re.compile(
    r"watching (?P<root>.+) as folder '(?P<folder>[^']+)' \((?P<mode>[^)]+)\); "
    r"start-up reconcile took (?P<seconds>[0-9.]+) s"
)


# ------------------------------------------------------------------ figures


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "never (timeout)"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base or math.isinf(value) or math.isinf(base):
        return "n/a"
    return f"{value / base:.2f}×"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------ /proc


def cpu_s(pid: int) -> float | None:
    """CPU seconds of a process, with its reaped children (the git commands it ran).

    Linux /proc only; None once the process is gone or elsewhere.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: utime, stime, cutime, cstime are fields 14-17 (man 5 proc).
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int, key: str = "VmRSS") -> int | None:
    """A memory figure of /proc/PID/status in KiB (VmRSS now, VmHWM its peak)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (git's cat-file readers, say)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _machine_busy_s() -> float | None:
    """CPU seconds all processes of the machine have used since boot (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class MachineShare:
    """The CPU each of the bench's own processes (server, agents, this script with the git
    commands it ran) and everything else used during the timed phases: a check on the
    figures, since other work on a small machine skews them."""

    def __init__(self) -> None:
        self.named: dict[str, float] = {}
        self.other_s = 0.0
        self.wall_s = 0.0
        self.known = True

    @staticmethod
    def _sample(pids: dict[str, int]) -> tuple[float | None, dict[str, float | None]]:
        me = os.times()
        own: dict[str, float | None] = {name: cpu_s(pid) for name, pid in pids.items()}
        own["bench"] = me.user + me.system + me.children_user + me.children_system
        return _machine_busy_s(), own

    @contextlib.contextmanager
    def timing(self, **pids: int) -> Iterator[None]:
        """Time a phase; ``pids`` names the processes of the bench (agent=..., server=...)."""
        before = self._sample(pids)
        started = time.perf_counter()
        try:
            yield
        finally:
            after = self._sample(pids)
            self.wall_s += time.perf_counter() - started
            values = [before[0], after[0], *before[1].values(), *after[1].values()]
            if None in values:
                self.known = False
            else:
                own = 0.0
                for name in after[1]:
                    used = after[1][name] - before[1][name]
                    self.named[name] = self.named.get(name, 0.0) + used
                    own += used
                self.other_s += max(0.0, (after[0] - before[0]) - own)

    def line(self) -> str:
        if not self.known or self.wall_s == 0:
            return "CPU during the timed phases: unknown (no /proc)"
        cores = os.cpu_count() or 1
        share = self.other_s / (self.wall_s * cores)
        mine = ", ".join(f"{name} {used:.1f} s" for name, used in self.named.items())
        return (
            f"CPU during the {self.wall_s:.0f} s of timed phases: {mine}; other processes "
            f"{self.other_s:.1f} s ({share:.0%} of {cores} cores"
            + (")" if share < 0.05 else "; the figures are skewed by other work)")
        )


# ------------------------------------------------------------------ scratch


@contextlib.contextmanager
def scratch_dir(prefix: str = "officium-agent-bench-") -> Iterator[Path]:
    """A temporary directory removed at the end (``TMPDIR`` chooses where)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- plain git


def plain_git_env() -> dict[str, str]:
    """Git as a person runs it, but without this machine's or user's settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "OFFICIUM_"))}
    environment.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
        LC_ALL="C",
    )
    return environment


_PLAIN_ENV = plain_git_env()


def plain_git(cwd: Path, *args: str, check: bool = True, data: bytes | None = None):
    """Run ``git ARGS`` in ``cwd``; return the CompletedProcess (bytes)."""
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=_PLAIN_ENV,
        input=data,
        capture_output=True,
        check=check,
    )


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob of these bytes (SHA-1 object format)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------- agent


@dataclass
class LogSummary:
    """What the agent's log says about a run."""

    mode: str | None
    reconcile_s: float | None
    warnings: int
    errors: int
    overflows: int
    rescans: int
    recorded_lines: int
    notable: list[str] = field(default_factory=list)


@dataclass
class Agent:
    """A running ``officium agent`` subprocess and where it keeps its log and state."""

    process: subprocess.Popen
    folder: Path
    state_dir: Path
    log: Path
    spawned: float  # time.perf_counter() just before the process was started
    command: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the log; waits for it (raises on timeout or exit)."""
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.log_text())
            if found:
                return found
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the agent exited ({self.process.returncode}) before logging "
                    f"{pattern.pattern!r}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the agent did not log {pattern.pattern!r} within {timeout:.0f} s:\n"
                    f"{self.tail()}"
                )
            time.sleep(0.02)

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    def git_dir(self) -> Path | None:
        """The repository the agent keeps for its folder (``STATE/NAME-HASH/repo.git``)."""
        found = sorted(self.state_dir.glob("*/repo.git"))
        return found[0] if found else None

    def has_head(self) -> bool:
        """True once the agent's repository has a commit (read from files, no git run)."""
        git_dir = self.git_dir()
        if git_dir is None:
            return False
        try:
            head = (git_dir / "HEAD").read_text().strip()
        except OSError:
            return False
        if not head.startswith("ref: "):
            return bool(head)
        ref = head[5:]
        if (git_dir / ref).is_file():
            return True
        try:
            return f" {ref}" in (git_dir / "packed-refs").read_text()
        except OSError:
            return False

    def commit_count(self) -> int:
        """Commits in the agent's repository (a read-only git probe)."""
        git_dir = self.git_dir()
        if git_dir is None or not self.has_head():
            return 0
        environment = {**plain_git_env(), "GIT_DIR": str(git_dir), "GIT_OPTIONAL_LOCKS": "0"}
        out = subprocess.run(
            ["git", "rev-list", "--count", "HEAD"],
            env=environment,
            capture_output=True,
            check=True,
            text=True,
        )
        return int(out.stdout.strip())

    def summary(self) -> LogSummary:
        text = self.log_text()
        lines = text.splitlines()
        mode = AGENT_MODE_RE.search(text)
        notable = [
            line
            for line in lines
            if " WARNING " in line or " ERROR " in line or "Traceback" in line
        ]
        return LogSummary(
            mode=mode["mode"] if mode else None,
            reconcile_s=float(mode["seconds"]) if mode else None,
            warnings=sum(" WARNING " in line for line in lines),
            errors=sum(" ERROR " in line or "Traceback" in line for line in lines),
            overflows=sum("overflow" in line.lower() for line in lines),
            rescans=sum("rescanning" in line for line in lines),
            recorded_lines=sum(" recorded " in line for line in lines),
            notable=notable,
        )


_RECORDED_RE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO officium\.agent: "
    r"recorded (?P<count>\d+) change\(s\): (?P<what>.*)$",
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class LoggedCommit:
    """A "recorded N change(s)" line of the agent's log: its commits were just made."""

    at: float  # time.time(), to the millisecond (the log's resolution)
    count: int
    what: str


def logged_commits(text: str) -> list[LoggedCommit]:
    """Every "recorded" line of an agent's log (its clock: local time, milliseconds)."""
    found = []
    for match in _RECORDED_RE.finditer(text):
        stamp = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        found.append(LoggedCommit(stamp, int(match["count"]), match["what"]))
    return found


def _officium_command() -> list[str]:
    script = Path(sys.executable).with_name("officium")
    if script.exists():
        return [str(script)]
    found = shutil.which("officium")
    if found is None:
        raise RuntimeError("no `officium` command: run from the project's virtual environment")
    return [found]


@contextlib.contextmanager
def running_agent(
    server: Server,
    folder: Path,
    state_dir: Path,
    *,
    extra: Sequence[str] = (),
    log_name: str = "agent.log",
    environment: dict[str, str] | None = None,
    keep_log: Path | None = None,
) -> Iterator[Agent]:
    """Start ``officium agent FOLDER`` with the admin token (it registers the folder).

    ``keep_log``: where to copy the agent's log once it has stopped (the temporary
    directory holding it is removed).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir.parent / log_name
    command = [
        *_officium_command(),
        "agent",
        str(folder),
        "--server",
        server.url,
        "--token",
        server.admin_token,
        "--state-dir",
        str(state_dir),
        *extra,
    ]
    # Inherited OFFICIUM_* variables would make the run depend on the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFICIUM_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(environment or {})
    process = None
    try:
        with log.open("ab") as sink:
            spawned = time.perf_counter()
            process = subprocess.Popen(
                command, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        yield Agent(process, folder, state_dir, log, spawned, command)
    finally:
        if process is not None:
            stop_process(process)
        if keep_log is not None and log.exists():
            shutil.copyfile(log, keep_log)
            print(f"agent log kept in {keep_log}", flush=True)


def add_agent_options(parser) -> None:
    """The options every agent bench takes."""
    parser.add_argument(
        "--agent-log",
        type=Path,
        metavar="FILE",
        help="copy the (measured) agent's log to FILE at the end",
    )


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM (the agent stops cleanly), then SIGKILL if it does not."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(AGENT_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def shown_command(agent: Agent) -> str:
    """The agent's command line with the token and temporary paths shortened."""
    return " ".join(
        "TOKEN" if part.startswith("off_") else part.replace(str(agent.state_dir.parent), "TMP")
        for part in agent.command
    )


# -------------------------------------------------------------- audit trail


@dataclass(frozen=True, slots=True)
class Recorded:
    """One ``version.recorded`` event: the register took a version."""

    seq: int
    path: str
    number: int
    sha256: str
    seen: float  # time.perf_counter() of the poll that first saw it


class AuditTail:
    """Follows the server's audit trail from where it stood when created.

    Reading only the events after the last one seen costs the server one small query per
    poll however large the register is, so polling often does not slow down what is
    being measured (a full document listing per poll would).
    """

    def __init__(self, server: Server) -> None:
        if not server.url.startswith(f"http://{LOOPBACK}:"):
            raise ValueError(f"the benches only talk to {LOOPBACK}")
        self.client = server.client()
        self.after = self._head()
        self.recorded: list[Recorded] = []
        self.other_actions: dict[str, int] = {}

    def _head(self) -> int:
        check = self.client.get("/api/v1/audit/verify")
        check.raise_for_status()
        return int(check.json()["head_seq"])

    def poll(self) -> list[Recorded]:
        """New ``version.recorded`` events since the last poll."""
        new: list[Recorded] = []
        while True:
            response = self.client.get(
                "/api/v1/audit/events", params={"after": self.after, "limit": 1000}
            )
            response.raise_for_status()
            page = response.json()
            now = time.perf_counter()
            for event in page["events"]:
                self.after = event["seq"]
                if event["action"] == "version.recorded":
                    details = event["details"]
                    new.append(
                        Recorded(
                            event["seq"],
                            details["path"],
                            details["number"],
                            details["sha256"],
                            now,
                        )
                    )
                else:
                    action = event["action"]
                    self.other_actions[action] = self.other_actions.get(action, 0) + 1
            if page["next"] is None:
                break
        self.recorded.extend(new)
        return new

    def close(self) -> None:
        self.client.close()


def documents(server: Server, folder: str) -> list[dict]:
    """Every document of a folder as the register lists it (following the pages)."""
    found: list[dict] = []
    after = 0
    with server.client() as client:
        while True:
            response = client.get(
                "/api/v1/documents", params={"folder": folder, "after": after, "limit": 500}
            )
            response.raise_for_status()
            page = response.json()
            found.extend(page["documents"])
            if page["next"] is None:
                return found
            after = page["next"]


def wait_until(condition, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def write_in_chunks(
    path: Path, data: bytes, chunks: int, pauses: Iterable[float]
) -> tuple[float, float]:
    """Write ``data`` to ``path`` through one open file in ``chunks`` pieces, flushed one by
    one with a pause between them (so a reader can catch it half-written).

    Returns perf_counter() at the open and just after the close.
    """
    size = len(data)
    bounds = [size * i // chunks for i in range(chunks + 1)]
    pauses = list(pauses)
    opened = time.perf_counter()
    with open(path, "wb") as handle:
        for i in range(chunks):
            handle.write(data[bounds[i] : bounds[i + 1]])
            handle.flush()
            if i < chunks - 1 and pauses[i] > 0:
                time.sleep(pauses[i])
    return opened, time.perf_counter()
