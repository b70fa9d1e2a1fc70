"""Approvals bench: submit + approve + status per second, beside a trivial endpoint and reports.

Starts a real server (``officium serve``) on a free loopback port, sets up an owner
office with a member, an approver office with an approver, a folder with its agent
token, and N documents reported through the agent's wire (all untimed). Then it times,
one request at a time over plain HTTP (``http.client``, one keep-alive connection per
role), the approval path of each document:

* submit: ``POST /api/v1/documents/{id}/reviews`` by the member of the owner office,
  ``{"parties": ["office:Approvers"], "mode": "any"}``;
* approve: ``POST /api/v1/documents/{id}/review/decisions`` ``{"verdict": "approve"}`` by
  the approver (the server signs the decision with its Ed25519 key);
* status: ``GET /api/v1/documents/{id}`` by the member (approved, final v1).

Baselines, same run, same server, same connections, taking turns with the cycles in
blocks: as many ``GET /healthz`` (no token, no database) and as many version reports,
one per request as in ``ingest.py``'s single mode. At the end it checks that every
document is approved with final = v1, that the audit chain verifies and holds one
submission, one decision and one approval per cycle, and that a sample of decisions'
signatures verify offline with the key from ``GET /api/v1/keys``.

    .venv/bin/python bench/approvals.py [--documents 1000] [--block 50] [--sample 100]
    .venv/bin/python bench/approvals.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from _common import (  # bench/ is on sys.path when a bench runs as a script
    LOOPBACK,
    Contention,
    Register,
    Server,
    add_server_options,
    commit_id,
    describe_database,
    environment_line,
    fixed_width,
    median,
    percentile,
    process_cpu_s,
    report,
    running_server,
    scratch_database,
)
from ingest import plan as plan_reports

from core.signatures import verify_detached

OWNER_OFFICE = "Owners"
APPROVER_OFFICE = "Approvers"
MEMBER = ("mara", "Mara Member")
APPROVER = ("abel", "Abel Approver")
FOLDER = "bench"
SEED_BATCH = 500
POLICY = {"parties": [f"office:{APPROVER_OFFICE}"], "mode": "any"}
STEPS = ("submit", "approve", "status")


# ------------------------------------------------------------------- client


class Connection:
    """One keep-alive connection through ``http.client``, the lightest client in the stdlib.

    The load generator shares the cores with the server; httpx would spend about as
    much CPU per request as the server's trivial endpoint. A connection idle for longer
    than ``IDLE_S`` is reopened before the next timed request (uvicorn closes idle
    keep-alive connections after 5 s), so no timed request pays for a TCP handshake.
    """

    IDLE_S = 2.0

    def __init__(self, url: str, token: str | None) -> None:
        parts = urlsplit(url)
        if parts.hostname != LOOPBACK:
            raise ValueError(f"the benches only talk to {LOOPBACK}, not {parts.hostname}")
        self.host, self.port = parts.hostname, parts.port
        self.headers = {"Content-Type": "application/json"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.connection: http.client.HTTPConnection | None = None
        self.last_used = 0.0

    def ready(self) -> None:
        """Open (or reopen, when idle too long) the connection, outside any timing."""
        if self.connection is None or time.monotonic() - self.last_used > self.IDLE_S:
            self.close()
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.connection.connect()
            self.last_used = time.monotonic()

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        if self.connection is None:
            self.ready()
        try:
            return self._request(method, path, data)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if method != "GET":
                raise  # a write is not retried: it may have been recorded
            self.close()
            self.ready()
            return self._request(method, path, data)

    def _request(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        self.connection.request(method, path, body=data, headers=self.headers)
        response = self.connection.getresponse()
        payload = response.read()
        self.last_used = time.monotonic()
        return response.status, payload

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _answer(what: str, status: int, body: bytes, expected: int) -> dict:
    if status != expected:
        raise RuntimeError(f"{what} answered {status}, expected {expected}: {body[:300]!r}")
    return json.loads(body)


def expect(response: httpx.Response, status: int) -> dict:
    return _answer(
        f"{response.request.method} {response.request.url.path}",
        response.status_code,
        response.content,
        status,
    )


# -------------------------------------------------------------------- setup


@dataclass
class Setup:
    register: Register
    member_token: str
    approver_token: str
    documents: list[tuple[int, str]]  # (id, sha256 of v1), in seeding order
    uploads: int
    upload_s: float
    seed_s: float


def set_up(server: Server, documents: int, report_contents: Sequence[bytes]) -> Setup:
    """Offices, persons with their tokens, the folder and its agent, N reported documents."""
    register = Register(server, office=OWNER_OFFICE, folder=FOLDER)
    tokens = {}
    with server.client() as admin:
        expect(admin.post("/api/v1/offices", json={"name": APPROVER_OFFICE}), 201)
        for (username, name), office, role in (
            (MEMBER, OWNER_OFFICE, "member"),
            (APPROVER, APPROVER_OFFICE, "approver"),
        ):
            expect(admin.post("/api/v1/persons", json={"username": username, "name": name}), 201)
            membership = {"username": username, "office": office, "role": role}
            expect(admin.post("/api/v1/memberships", json=membership), 201)
            created = expect(admin.post("/api/v1/tokens", json={"username": username}), 201)
            tokens[username] = created["token"]

    contents = [f"approval bench document {i}\n".encode() * 16 for i in range(documents)]
    upload_s = register.upload([*contents, *report_contents])
    reports = [
        report(f"approvals/doc-{i:05d}.odt", data, kind="created", commit=commit_id("approvals", i))
        for i, data in enumerate(contents)
    ]
    seeded: dict[str, int] = {}
    started = time.perf_counter()
    with register.agent() as agent:
        for first in range(0, len(reports), SEED_BATCH):
            for result in register.post_reports(agent, reports[first : first + SEED_BATCH]):
                if result["outcome"] != "recorded":
                    raise RuntimeError(f"seeding: {result['path']} was {result['outcome']}")
                seeded[result["path"]] = result["document_id"]
    seed_s = time.perf_counter() - started
    ids = [(seeded[r["path"]], r["sha256"]) for r in reports]
    return Setup(
        register,
        tokens[MEMBER[0]],
        tokens[APPROVER[0]],
        ids,
        len(contents) + len(report_contents),
        upload_s,
        seed_s,
    )


# ------------------------------------------------------------------- timing


@dataclass
class Kind:
    """One kind of timed operation: its latencies, wall time and the server's CPU."""

    name: str
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    server_cpu_s: float | None = 0.0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.wall_s

    def add_block(self, wall_s: float, cpu_s: float | None) -> None:
        self.wall_s += wall_s
        if cpu_s is None or self.server_cpu_s is None:
            self.server_cpu_s = None
        else:
            self.server_cpu_s += cpu_s


class Bench:
    def __init__(self, server: Server, setup: Setup, report_plan: list[dict]) -> None:
        self.server = server
        self.member = Connection(server.url, setup.member_token)
        self.approver = Connection(server.url, setup.approver_token)
        self.agent = Connection(server.url, setup.register.agent_token)
        self.anonymous = Connection(server.url, None)
        self.report_plan = report_plan
        self.next_report = 0
        self.cycles = Kind("approval cycle (submit + approve + status)")
        self.healthz = Kind("baseline: GET /healthz")
        self.reports = Kind("baseline: version report, 1 per request")
        self.steps: dict[str, list[float]] = {step: [] for step in STEPS}

    def close(self) -> None:
        for connection in (self.member, self.approver, self.agent, self.anonymous):
            connection.close()

    # One operation of each kind; each returns its latency (the cycle: its three steps').

    def cycle(self, document: tuple[int, str]) -> tuple[float, float, float]:
        document_id, sha = document
        self.member.ready()
        self.approver.ready()
        t0 = time.perf_counter()
        submitted = self.member.request("POST", f"/api/v1/documents/{document_id}/reviews", POLICY)
        t1 = time.perf_counter()
        decided = self.approver.request(
            "POST", f"/api/v1/documents/{document_id}/review/decisions", {"verdict": "approve"}
        )
        t2 = time.perf_counter()
        status = self.member.request("GET", f"/api/v1/documents/{document_id}")
        t3 = time.perf_counter()
        review = _answer(f"submit {document_id}", *submitted, 201)
        if review["state"] != "open" or review["version"] != {"number": 1, "sha256": sha}:
            raise RuntimeError(f"submit {document_id}: unexpected review {review}")
        review = _answer(f"approve {document_id}", *decided, 200)
        if review["state"] != "approved":
            raise RuntimeError(f"approve {document_id}: the review is {review['state']}")
        document_now = _answer(f"status {document_id}", *status, 200)
        if document_now["state"] != "approved" or document_now["final"] != {
            "number": 1,
            "sha256": sha,
        }:
            raise RuntimeError(f"status {document_id}: {document_now}")
        return t1 - t0, t2 - t1, t3 - t2

    def health(self) -> float:
        self.anonymous.ready()
        started = time.perf_counter()
        answer = self.anonymous.request("GET", "/healthz")
        elapsed = time.perf_counter() - started
        _answer("GET /healthz", *answer, 200)
        return elapsed

    def report(self) -> float:
        one = self.report_plan[self.next_report]
        self.next_report += 1
        self.agent.ready()
        started = time.perf_counter()
        answer = self.agent.request("POST", f"/api/v1/folders/{FOLDER}/reports", {"reports": [one]})
        elapsed = time.perf_counter() - started
        (result,) = _answer("POST reports", *answer, 200)["results"]
        if result["outcome"] != "recorded" or result["replayed"]:
            raise RuntimeError(f"a baseline report was not recorded anew: {result}")
        return elapsed

    # Blocks and rounds.

    def block(
        self, kind: Kind, run: Callable[[], None], count: int, contention: Contention | None
    ) -> None:
        cpu_before = process_cpu_s(self.server.process.pid)
        started = time.perf_counter()
        if contention is None:
            for _ in range(count):
                run()
        else:
            with contention.timing():
                for _ in range(count):
                    run()
        wall = time.perf_counter() - started
        cpu_after = process_cpu_s(self.server.process.pid)
        if contention is not None:
            cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
            kind.add_block(wall, cpu)

    def rounds(
        self, documents: Sequence[tuple[int, str]], block: int, contention: Contention | None
    ) -> None:
        """All the documents' cycles, and as many of each baseline, taking turns in blocks.

        The order of the three kinds rotates from one round to the next, so a drift of
        the machine (a checkpoint, another process) falls on all of them alike.
        """
        timed = contention is not None
        for index, first in enumerate(range(0, len(documents), block)):
            chunk = iter(documents[first : first + block])
            count = min(block, len(documents) - first)

            def one_cycle(chunk=chunk) -> None:
                steps = self.cycle(next(chunk))
                if timed:
                    self.cycles.latencies.append(sum(steps))
                    for name, seconds in zip(STEPS, steps, strict=True):
                        self.steps[name].append(seconds)

            def one_health() -> None:
                seconds = self.health()
                if timed:
                    self.healthz.latencies.append(seconds)

            def one_report() -> None:
                seconds = self.report()
                if timed:
                    self.reports.latencies.append(seconds)

            turns = [
                (self.cycles, one_cycle),
                (self.healthz, one_health),
                (self.reports, one_report),
            ]
            shift = index % len(turns)
            for kind, run in turns[shift:] + turns[:shift]:
                self.block(kind, run, count, contention)


# ------------------------------------------------------------------- checks


def check(server: Server, setup: Setup, cycles: int, sample: int, seed: int) -> list[list[str]]:
    """Final versions, the audit chain and its events, decisions' signatures."""
    rows = []
    expected = dict(setup.documents)
    register = setup.register
    found = {d["id"]: d for d in register.documents() if d["id"] in expected}
    wrong = [
        i
        for i, sha in expected.items()
        if i not in found
        or found[i]["state"] != "approved"
        or found[i]["final"] != {"number": 1, "sha256": sha}
        or found[i]["latest"]["number"] != 1
        or found[i]["awaiting"]
    ]
    rows.append(
        [
            "every document approved, final = v1 (its seeded SHA-256), nothing awaited",
            f"{len(expected) - len(wrong)} of {len(expected)}"
            + (f"; first wrong: {found.get(wrong[0])}" if wrong else ""),
            _ok(not wrong),
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

    actions: Counter[str] = Counter()
    with server.client() as admin:
        after = 0
        while True:
            page = expect(admin.get("/api/v1/audit/events", params={"after": after}), 200)
            actions.update(e["action"] for e in page["events"] if e["action"].startswith("review."))
            if page["next"] is None:
                break
            after = page["next"]
    wanted = {"review.submitted": cycles, "review.decided": cycles, "review.approved": cycles}
    rows.append(
        [
            "one review.submitted, review.decided, review.approved event per cycle",
            ", ".join(f"{action} {count}" for action, count in sorted(actions.items()))
            + f"; cycles {cycles}",
            _ok(dict(actions) == wanted),
        ]
    )

    rows.append(check_signatures(server, setup, sample, seed))
    return rows


def check_signatures(server: Server, setup: Setup, sample: int, seed: int) -> list[str]:
    """A sample of decisions: the server's detached JWS verifies with the published key,
    the payload names the right document, version, bytes and signer, and a payload with
    one byte changed does not verify (so the check can fail)."""
    chosen = random.Random(seed).sample(setup.documents, min(sample, len(setup.documents)))
    problems: list[str] = []
    with server.client(setup.member_token) as reader:
        keys = {k["kid"]: k for k in expect(reader.get("/api/v1/keys"), 200)["keys"]}
        for document_id, sha in chosen:
            reviews = expect(reader.get(f"/api/v1/documents/{document_id}/reviews"), 200)
            decisions = [d for r in reviews["reviews"] for d in r["decisions"]]
            if len(reviews["reviews"]) != 1 or len(decisions) != 1:
                problems.append(f"document {document_id}: {len(decisions)} decisions")
                continue
            decision = decisions[0]
            header = json.loads(_b64(decision["signature"].split(".")[0]))
            key = keys.get(header.get("kid"))
            payload = decision["payload"].encode()
            content = json.loads(payload)
            if key is None or key["username"] is not None:
                problems.append(f"document {document_id}: no server key {header.get('kid')}")
            elif not verify_detached(decision["signature"], payload, key["jwk"]):
                problems.append(f"document {document_id}: the signature does not verify")
            elif verify_detached(decision["signature"], _flip(payload), key["jwk"]):
                problems.append(f"document {document_id}: a changed payload verifies")
            elif (
                content["document"],
                content["version"],
                content["sha256"],
                content["verdict"],
                content["signer"]["username"],
                content["signer"]["office"],
            ) != (document_id, 1, sha, "approve", APPROVER[0], APPROVER_OFFICE):
                problems.append(f"document {document_id}: payload {content}")
    return [
        "decisions' signatures verify with GET /api/v1/keys (core.signatures.verify_detached)",
        f"{len(chosen) - len(problems)} of {len(chosen)} sampled decisions verify, name "
        "the document, v1, its SHA-256 and the approver; one byte changed fails"
        + (f"; first problem: {problems[0]}" if problems else ""),
        _ok(not problems and bool(chosen)),
    ]


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _flip(payload: bytes) -> bytes:
    middle = len(payload) // 2
    return payload[:middle] + bytes([payload[middle] ^ 1]) + payload[middle + 1 :]


def _ok(condition: bool) -> str:
    return "OK" if condition else "FAILED"


# ------------------------------------------------------------------- output


def print_report(
    bench: Bench,
    setup: Setup,
    checks: list[list[str]],
    args: argparse.Namespace,
    database: str,
    contention: Contention,
) -> bool:
    print()
    print(environment_line(database, args.workers))
    print(contention.line())
    print(
        f"set up first, not timed: {len(setup.documents)} documents reported "
        f"in batches of {SEED_BATCH} ({setup.seed_s:.1f} s), after {setup.uploads} content "
        f"uploads ({setup.upload_s:.1f} s); {args.warmup} cycles, health checks and reports "
        "of warm-up"
    )
    print(
        "client: http.client (stdlib), one request at a time, one keep-alive connection per "
        f"role (member, approver, agent, anonymous); cycles and baselines take turns in "
        f"blocks of {args.block}, same run, same server"
    )
    print(f"policy: {json.dumps(POLICY)}; the server signs each decision (Ed25519, JWS)")
    print()
    cycles = bench.cycles
    rows = []
    for kind in (bench.cycles, bench.healthz, bench.reports):
        cpu = (
            f"{kind.server_cpu_s / len(kind.latencies) * 1000:.2f}"
            if kind.server_cpu_s is not None
            else "unknown"
        )
        is_cycle = kind is cycles
        rows.append(
            [
                kind.name,
                str(len(kind.latencies)),
                f"{kind.wall_s:.2f}",
                f"{kind.per_second:.0f}",
                f"{median(kind.latencies) * 1000:.2f}",
                f"{percentile(kind.latencies, 99) * 1000:.2f}",
                cpu,
                "—" if is_cycle else f"{cycles.per_second / kind.per_second:.3f}",
                "—" if is_cycle else f"{kind.per_second / cycles.per_second:.1f}",
            ]
        )
    print(
        fixed_width(
            [
                "run",
                "count",
                "seconds",
                "per second",
                "median (ms)",
                "p99 (ms)",
                "server CPU (ms each)",
                "ratio: cycles/s ÷ its/s",
                "one cycle = N of these",
            ],
            rows,
        )
    )
    print()
    total = sum(sum(values) for values in bench.steps.values())
    step_rows = [
        [
            {
                "submit": "submit: POST /documents/{id}/reviews (member)",
                "approve": "approve: POST /documents/{id}/review/decisions (approver)",
                "status": "status: GET /documents/{id} (member)",
            }[name],
            f"{median(values) * 1000:.2f}",
            f"{percentile(values, 99) * 1000:.2f}",
            f"{sum(values) / total:.0%}",
            f"{median(values) / median(bench.healthz.latencies):.1f}×",
        ]
        for name, values in bench.steps.items()
    ]
    print(
        fixed_width(
            ["step", "median (ms)", "p99 (ms)", "share of cycle time", "median ÷ healthz median"],
            step_rows,
        )
    )
    print()
    print(fixed_width(["check", "found", "result"], checks))
    print()
    print(
        "DESIGN §6 sets no bar for the approval path: the figures are reported, not judged. "
        f"For scale: {cycles.per_second:.0f} cycles/s is {3 * cycles.per_second:.0f} "
        f"requests/s, {3 * cycles.per_second / bench.healthz.per_second:.0%} of the "
        "trivial endpoint's rate."
    )
    return all(row[-1] == "OK" for row in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--documents",
        type=int,
        default=1000,
        help="documents taken through the timed approval path (default 1000); as many "
        "health checks and version reports are timed as baselines",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=30,
        help="untimed cycles (on extra documents), health checks and reports first (default 30)",
    )
    parser.add_argument(
        "--block",
        type=int,
        default=50,
        help="operations of one kind before the next kind takes its turn (default 50)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=100,
        help="decisions whose signatures are verified at the end (default 100)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (plan and sample)")
    add_server_options(parser)
    args = parser.parse_args(argv)
    for name, low, high in (
        ("documents", 1, 50_000),
        ("warmup", 0, 1000),
        ("block", 1, 1000),
        ("sample", 1, 50_000),
    ):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be between {low} and {high}")

    rng = random.Random(args.seed)
    total = args.documents + args.warmup
    # The report baseline as in ingest.py's single mode: new documents alternate with
    # modifications of documents already recorded, every report a new version.
    reports = plan_reports("reports", total, 1, rng)
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.database_url))
        database = describe_database(url)
        server = stack.enter_context(running_server(url, workers=args.workers))
        print(f"setting up {total} documents ...", flush=True)
        setup = set_up(server, total, reports.contents)
        bench = Bench(server, setup, reports.reports)
        stack.callback(bench.close)
        contention = Contention(server.process.pid, database_url=url)
        warm, timed = setup.documents[: args.warmup], setup.documents[args.warmup :]
        if warm:
            bench.rounds(warm, args.block, None)
        print(
            f"timing {len(timed)} approval cycles, {len(timed)} GET /healthz and "
            f"{len(timed)} single reports ...",
            flush=True,
        )
        bench.rounds(timed, args.block, contention)
        print("checking ...", flush=True)
        checks = check(server, setup, total, args.sample, args.seed)
    ok = print_report(bench, setup, checks, args, database, contention)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
