"""What the benches share: a real server in a subprocess, a scratch PostgreSQL database,
seeding over plain HTTP, and the arithmetic and printing of figures.

The benches speak raw HTTP with httpx (not the SDK) so that what they time is the
server, not the client library. Every request goes to 127.0.0.1; every count is bounded;
the server process is always stopped and every temporary directory removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = [
    "LOOPBACK",
    "Contention",
    "Register",
    "Server",
    "add_server_options",
    "commit_id",
    "describe_database",
    "environment_line",
    "fixed_width",
    "median",
    "ms",
    "percentile",
    "process_cpu_s",
    "report",
    "running_server",
    "scratch_database",
    "sha256",
    "split",
]

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


# ------------------------------------------------------------------- figures


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with ``pct``% of values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def fixed_width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table that reads in a terminal and pastes into Markdown."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def environment_line(database: str, workers: int = 1) -> str:
    processes = "one uvicorn worker" if workers == 1 else f"{workers} uvicorn workers"
    load = ""
    if LOAD_AT_START is not None:
        # Other work on the machine skews every figure: say how busy it was before this
        # run (later readings count this run's own threads).
        load = f"; 1-minute load average {LOAD_AT_START:.2f} before the run"
    return (
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; database: {database}; "
        f"server: `officium serve` ({processes}) on loopback, "
        f"sharing the cores with this load generator{load}"
    )


def add_server_options(parser) -> None:
    """The options every bench takes to choose the server's database and processes."""
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="run on PostgreSQL: a URL of a server where this user may CREATE DATABASE "
        "(e.g. postgresql://postgres@127.0.0.1:5432/test); a fresh database is created for "
        "the run and dropped after it. Default: SQLite in a temporary data directory.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 9),
        metavar="N",
        help="server processes (`officium serve --workers N`; default 1)",
    )


def split(items: Sequence, parts: int) -> list[list]:
    """``items`` dealt round-robin into ``parts`` lists."""
    return [list(items[i::parts]) for i in range(parts)]


def process_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds used so far by a process and its live children.

    Read from Linux's /proc (so ``--workers`` processes count too); None elsewhere.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):
        total += process_cpu_s(child) or 0.0
    return total


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return children


def _machine_busy_s() -> float | None:
    """CPU seconds all processes of the machine have used since boot (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_of_named(names: set[str]) -> float:
    """CPU seconds used so far by the live processes whose command name is in ``names``."""
    total = 0.0
    if not names:
        return total
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        if head.split("(", 1)[-1] in names:
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Contention:
    """The CPU other processes used while a bench was timing: a check on its figures.

    Busy time of the whole machine, minus the server's and this process's own, summed
    over every ``timing()`` block.
    """

    def __init__(self, server_pid: int, *, database_url: str | None) -> None:
        self.server_pid = server_pid
        # A PostgreSQL server on this machine works for the bench: its processes count
        # as the bench's own.
        self.own_names = {"postgres"} if database_url else set()
        self.other_s = 0.0
        self.wall_s = 0.0
        self.known = True

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        before = self._sample()
        started = time.perf_counter()
        try:
            yield
        finally:
            after = self._sample()
            self.wall_s += time.perf_counter() - started
            if before is None or after is None:
                self.known = False
            else:
                self.other_s += max(0.0, (after[0] - before[0]) - (after[1] - before[1]))

    def _sample(self) -> tuple[float, float] | None:
        machine = _machine_busy_s()
        server = process_cpu_s(self.server_pid)
        if machine is None or server is None:
            return None
        return machine, server + time.process_time() + _cpu_of_named(self.own_names)

    def line(self) -> str:
        if not self.known or self.wall_s == 0:
            return "other processes' CPU during the timed phases: unknown (no /proc)"
        share = self.other_s / (self.wall_s * (os.cpu_count() or 1))
        return (
            f"other processes used {self.other_s:.1f} CPU-seconds during the "
            f"{self.wall_s:.0f} s of timed phases ({share:.0%} of the machine)"
            + ("" if share < 0.05 else ": the figures below are skewed by other work")
        )


# -------------------------------------------------------------- identities


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commit_id(*parts: object) -> str:
    """A made-up git commit id, unique for its parts."""
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()


# ---------------------------------------------------------------- databases


def _psycopg_url(url: str) -> str:
    # Accept SQLAlchemy spellings (postgresql+psycopg://) as well as libpq's.
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(_psycopg_url(url))
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def scratch_database(base_url: str | None) -> Iterator[str | None]:
    """A fresh, empty PostgreSQL database for one run (dropped after); None means SQLite."""
    if base_url is None:
        yield None
        return
    import psycopg

    admin_url = _psycopg_url(base_url)
    name = f"officium_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(base_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def describe_database(url: str | None) -> str:
    """What the server runs on, for the printed report."""
    if url is None:
        return "SQLite (WAL, synchronous=FULL)"
    import psycopg

    with psycopg.connect(url) as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
    return f"PostgreSQL {version.split()[0]} (a scratch database)"


# ------------------------------------------------------------------- server


@dataclass
class Server:
    url: str
    admin_token: str
    data_dir: Path
    database_url: str | None
    process: subprocess.Popen = field(repr=False)

    def client(self, token: str | None = None, **options) -> httpx.Client:
        """A keep-alive client to this server; ``trust_env=False`` so no proxy intervenes."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=60.0, trust_env=False, **options
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _launchers(data_dir: Path, port: int, workers: int) -> list[tuple[str, list[str]]]:
    """Ways to start the server, preferred first.

    The ``officium`` console script is the real thing; the direct call of
    ``server.commands.serve`` is a fallback for a checkout whose CLI package does not
    import at the moment (the server itself does not depend on it).
    """
    arguments = ["--data", str(data_dir), "--port", str(port), "--host", LOOPBACK]
    if workers > 1:
        # `serve --workers` was dropped: uvicorn's multi-process mode leaves Nagle's
        # algorithm on (40 ms per keep-alive request). Replicas are separate processes.
        raise SystemExit("--workers > 1 is not supported: run several `officium serve`")
    launchers = []
    script = Path(sys.executable).with_name("officium")
    if script.exists() or shutil.which("officium"):
        launchers.append(
            (
                "officium serve",
                [str(script) if script.exists() else "officium", "serve", *arguments],
            )
        )
    direct = (
        "import sys; from pathlib import Path; from server.commands import serve; "
        "serve(data=Path(sys.argv[1]), port=int(sys.argv[2]), host=sys.argv[3])"
    )
    launchers.append(
        (
            "server.commands.serve",
            [sys.executable, "-c", direct, str(data_dir), str(port), LOOPBACK],
        )
    )
    return launchers


def _server_environment(admin_token: str, database_url: str | None) -> dict[str, str]:
    # Inherited OFFICIUM_* variables would make the run depend on the caller's shell.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OFFICIUM_")}
    environment["OFFICIUM_BOOTSTRAP_TOKEN"] = admin_token
    if database_url is not None:
        environment["OFFICIUM_DATABASE_URL"] = database_url
    return environment


def _wait_ready(process: subprocess.Popen, url: str) -> bool:
    """True once /readyz answers 200; False if the process died first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=2.0, trust_env=False) as probe:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if probe.get("/readyz").status_code == 200:
                    return True
            time.sleep(0.05)
    raise TimeoutError(f"the server at {url} was not ready within {READY_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_server(database_url: str | None, *, workers: int = 1) -> Iterator[Server]:
    """Start ``officium serve`` on a free loopback port with a fresh data directory."""
    data_dir = Path(tempfile.mkdtemp(prefix="officium-bench-"))
    admin_token = f"off_bench-{secrets.token_hex(16)}"
    environment = _server_environment(admin_token, database_url)
    process = None
    # A SIGTERM to the bench unwinds like Ctrl-C, so the server and the directory go too.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        port = _free_port()
        url = f"http://{LOOPBACK}:{port}"
        log = data_dir / "server.log"
        for name, command in _launchers(data_dir / "server", port, workers):
            with log.open("ab") as sink:
                process = subprocess.Popen(
                    command,
                    env=environment,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if _wait_ready(process, url):
                print(f"server: started with `{name}` at {url}", flush=True)
                break
            print(f"server: `{name}` exited before it was ready:\n{_tail(log)}", file=sys.stderr)
            process = None
        if process is None:
            raise RuntimeError("the server could not be started (see the log above)")
        yield Server(url, admin_token, data_dir, database_url, process)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


# ----------------------------------------------------------------- register


class Register:
    """The agent's side of the wire over raw HTTP: an office, a folder, its agent token."""

    def __init__(self, server: Server, *, office: str = "Bench", folder: str = "bench") -> None:
        self.server = server
        self.folder = folder
        with server.client() as admin:
            _expect(admin.post("/api/v1/offices", json={"name": office}), 201)
            _expect(
                admin.post(
                    "/api/v1/folders",
                    json={"name": folder, "root": f"/srv/share/{folder}", "default_owner": office},
                ),
                201,
            )
            created = _expect(admin.post("/api/v1/tokens", json={"folder": folder}), 201)
        self.agent_token = created.json()["token"]

    def agent(self) -> httpx.Client:
        return self.server.client(self.agent_token)

    def upload(self, contents: Sequence[bytes], *, threads: int = 4) -> float:
        """Upload every content (fanned out over a few clients); return the seconds taken."""
        errors: list[str] = []

        def work(chunk: list[bytes]) -> None:
            with self.agent() as client:
                for data in chunk:
                    try:
                        response = client.put(f"/api/v1/content/{sha256(data)}", content=data)
                    except httpx.HTTPError as exc:  # the server went away (Ctrl-C, SIGTERM)
                        errors.append(f"{type(exc).__name__}: {exc}")
                        return
                    if response.status_code not in (200, 201):
                        errors.append(f"{response.status_code} {response.text[:200]}")
                        return

        started = time.perf_counter()
        _in_threads(work, split(contents, threads))
        elapsed = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"an upload failed: {errors[0]}")
        return elapsed

    def post_reports(self, client: httpx.Client, reports: list[dict]) -> list[dict]:
        """Post one batch; return its results (raise on anything but 200)."""
        response = client.post(f"/api/v1/folders/{self.folder}/reports", json={"reports": reports})
        return _expect(response, 200).json()["results"]

    def chain(self) -> dict:
        """The server's recomputation of the whole audit chain (a ChainCheck)."""
        with self.server.client() as admin:
            return _expect(admin.get("/api/v1/audit/verify"), 200).json()

    def documents(self) -> list[dict]:
        """Every document of the folder, following the pages."""
        found, after = [], 0
        with self.server.client() as admin:
            while True:
                page = _expect(
                    admin.get(
                        "/api/v1/documents",
                        params={"folder": self.folder, "after": after, "limit": 500},
                    ),
                    200,
                ).json()
                found.extend(page["documents"])
                if page["next"] is None:
                    return found
                after = page["next"]


def report(path: str, data: bytes, *, kind: str, commit: str) -> dict:
    """One version report as the agent sends it."""
    return {
        "path": path,
        "kind": kind,
        "sha256": sha256(data),
        "size": len(data),
        "commit": commit,
        "observed_at": datetime.now(UTC).isoformat(),
    }


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, expected {status}: {response.text[:300]}"
        )
    return response


def _in_threads(work: Callable[[list], None], chunks: list[list]) -> None:
    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks if chunk]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
