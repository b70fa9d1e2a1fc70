"""Notifications: the event stream resumes by seq without a gap or a duplicate, and
webhooks are signed, retried with backoff after a failing receiver, and logged.

The stream is read over a real socket (``live_server``); webhooks are posted to a real
HTTP receiver on loopback, with the dispatcher's passes driven by the test at moved
times so that backoff is checked without waiting for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from server import notifications
from server.api import notifications as notifications_api
from server.models import Webhook, utcnow
from server.settings import Settings
from tests.conftest import ADMIN_TOKEN, AgentDouble

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RETRY_BASE = 0.25  # seconds; a power of two, so every backoff step is exact


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        webhook_retry_base_seconds=RETRY_BASE,
    )


# ------------------------------------------------------------------- helpers


def trail(client, after: int = 0) -> list[dict]:
    """Every event after ``after``, as the audit API gives them."""
    events, cursor = [], after
    while True:
        page = client.get(
            "/api/v1/audit/events", params={"after": cursor, "limit": 1000}, headers=ADMIN
        )
        assert page.status_code == 200, page.text
        events += page.json()["events"]
        if page.json()["next"] is None:
            return events
        cursor = page.json()["next"]


def head(client) -> int:
    events = trail(client)
    return events[-1]["seq"]


def add_office(client, name: str, parent: str | None = None) -> None:
    response = client.post("/api/v1/offices", json={"name": name, "parent": parent}, headers=ADMIN)
    assert response.status_code == 201, response.text


def add_folder(client, name: str, owner: str) -> AgentDouble:
    """A folder owned by ``owner`` and the double of its agent."""
    response = client.post(
        "/api/v1/folders",
        json={"name": name, "root": f"/srv/share/{name}", "default_owner": owner},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    token = client.post("/api/v1/tokens", json={"folder": name}, headers=ADMIN)
    assert token.status_code == 201, token.text
    return AgentDouble(client, token.json()["token"], name)


def member_token(client, username: str, office: str) -> str:
    """A token for a person who is only a member of ``office``."""
    assert (
        client.post(
            "/api/v1/persons", json={"username": username, "name": username.title()}, headers=ADMIN
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/api/v1/memberships",
            json={"username": username, "office": office, "role": "member"},
            headers=ADMIN,
        ).status_code
        == 201
    )
    response = client.post("/api/v1/tokens", json={"username": username}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()["token"]


@dataclass
class Sse:
    """One block of the stream: an event, an id-only checkpoint, or a comment."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None


def parse_sse(lines: Iterator[str]) -> Iterator[Sse]:
    """Server-sent events as the HTML standard reads them (one block per blank line)."""
    block = Sse()
    for line in lines:
        if line == "":
            if block != Sse():
                yield block
            block = Sse()
        elif line.startswith(":"):
            block.comment = line[1:].strip()
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                block.data = value if block.data is None else f"{block.data}\n{value}"
            elif field in ("id", "event"):
                setattr(block, field, value)


@contextmanager
def stream(base: str, *, token: str = ADMIN_TOKEN, last_event_id: str | None = None, **params):
    """Open the event stream; leaving the block disconnects."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    query = {key: value for key, value in params.items() if value is not None}
    with (
        httpx.Client(base_url=base, timeout=10.0, trust_env=False) as client,
        client.stream("GET", "/api/v1/events/stream", params=query, headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield parse_sse(response.iter_lines())


def events_of(blocks: Iterator[Sse], count: int) -> list[Sse]:
    """The next ``count`` dispatched events (blocks with data), skipping the rest."""
    found = []
    for block in blocks:
        if block.data is not None:
            found.append(block)
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {len(found)} of {count} events")


def assert_carries(received: list[Sse], expected: list[dict]) -> None:
    """The stream sent exactly these events: seq as id, action as name, exact text."""
    assert [int(block.id) for block in received] == [event["seq"] for event in expected]
    assert [block.event for block in received] == [event["action"] for event in expected]
    assert [block.data for block in received] == [event["canonical"] for event in expected]


# ------------------------------------------------------------------ the stream


def test_stream_resumes_by_last_event_id_without_gap_or_duplicate(live_server):
    with httpx.Client(base_url=live_server, trust_env=False) as api:
        start = head(api)
        for name in ("Finance", "Legal", "Archive"):
            add_office(api, name)

        with stream(live_server, after=start) as blocks:
            first = events_of(blocks, 2)
        # Disconnected: more happens meanwhile.
        add_office(api, "Audit", parent="Finance")
        add_office(api, "Press")

        # A reconnecting client keeps its URL and sends the last id it saw; the header wins.
        with stream(live_server, after=start, last_event_id=first[-1].id) as blocks:
            backlog = events_of(blocks, 3)
            add_office(api, "Registry")  # recorded while the client listens
            live = events_of(blocks, 1)

        assert_carries(first + backlog + live, trail(api, after=start))
        assert [int(block.id) for block in first + backlog + live] == list(
            range(start + 1, start + 7)
        )


def test_stream_without_a_resume_point_starts_at_the_head(live_server):
    with httpx.Client(base_url=live_server, trust_env=False) as api:
        add_office(api, "Finance")
        with stream(live_server) as blocks:
            add_office(api, "Legal")
            (only,) = events_of(blocks, 1)
        assert json.loads(only.data)["details"]["name"] == "Legal"
        assert only.event == "office.created"


def test_stream_filters_by_document_folder_and_office(live_server):
    with httpx.Client(base_url=live_server, trust_env=False) as api:
        start = head(api)
        add_office(api, "Planning")
        add_office(api, "Legal")
        plans = add_folder(api, "plans", "Planning")
        contracts = add_folder(api, "contracts", "Legal")
        plan = plans.save("plan.docx", b"plan v1")["document_id"]
        plans.save("budget.xlsx", b"budget v1")
        contracts.save("lease.pdf", b"lease v1")
        plans.save("plan.docx", b"plan v2")
        legal_id = next(
            office["id"]
            for office in api.get("/api/v1/offices", headers=ADMIN).json()["offices"]
            if office["name"] == "Legal"
        )
        contracts_id = next(
            folder["id"]
            for folder in api.get("/api/v1/folders", headers=ADMIN).json()["folders"]
            if folder["name"] == "contracts"
        )
        recorded = trail(api, after=start)
        of_plan = [e for e in recorded if e["subject"].get("document") == plan]
        of_contracts = [e for e in recorded if e["subject"].get("folder") == contracts_id]
        of_legal = [
            e
            for e in recorded
            if (e["subject"].get("folder") == contracts_id and "document" in e["subject"])
            or ("document" not in e["subject"] and e["subject"].get("office") == legal_id)
        ]
        # created, v1, v2 / folder, agent token, document, v1 / office, document, v1
        assert (len(of_plan), len(of_contracts), len(of_legal)) == (3, 4, 3)

        for params, expected in (
            ({"document": plan}, of_plan),
            ({"folder": "contracts"}, of_contracts),
            ({"office": "Legal"}, of_legal),
        ):
            with stream(live_server, after=start, **params) as blocks:
                received = events_of(blocks, len(expected))
                # What comes next is the next matching event, nothing recorded between.
                plans.save("budget.xlsx", b"budget again " + repr(params).encode())
                contracts.save("lease.pdf", b"lease again " + repr(params).encode())
                plans.save("plan.docx", b"plan again " + repr(params).encode())
                (following,) = events_of(blocks, 1)
            assert_carries(received, expected)
            assert following.event == "version.recorded"
            subject = json.loads(following.data)["subject"]
            if "document" in params:
                assert subject["document"] == plan
            else:
                assert subject["folder"] == contracts_id


def test_a_quiet_filtered_stream_pings_and_moves_the_resume_point(live_server, monkeypatch):
    monkeypatch.setattr(notifications_api, "PING_SECONDS", 0.3)
    with httpx.Client(base_url=live_server, trust_env=False) as api:
        add_office(api, "Planning")
        plans = add_folder(api, "plans", "Planning")
        plan = plans.save("plan.docx", b"v1")["document_id"]
        start = head(api)
        with stream(live_server, after=start, document=plan) as blocks:
            for name in ("Finance", "Legal"):
                add_office(api, name)  # events the filter skips
            skipped_to = head(api)
            seen = []
            for block in blocks:
                seen.append(block)
                if block.id == str(skipped_to):
                    break
        assert any(block.comment for block in seen), "no keep-alive comment was sent"
        assert all(block.data is None for block in seen)

        with stream(live_server, last_event_id=str(skipped_to), document=plan) as blocks:
            plans.save("plan.docx", b"v2")
            (next_one,) = events_of(blocks, 1)
        assert int(next_one.id) == skipped_to + 1
        assert next_one.event == "version.recorded"


def test_stream_refusals(live_server):
    with httpx.Client(base_url=live_server, timeout=10.0, trust_env=False) as api:
        url = "/api/v1/events/stream"
        assert api.get(url).status_code == 401
        unknown = api.get(url, params={"folder": "nowhere"}, headers=ADMIN)
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        assert "nowhere" in unknown.json()["detail"]
        bad_id = api.get(url, headers={**ADMIN, "Last-Event-ID": "seven"})
        assert bad_id.status_code == 422
        assert "Last-Event-ID" in bad_id.json()["detail"]
        assert api.get(url, params={"after": -1}, headers=ADMIN).status_code == 422


def test_any_valid_token_may_listen(live_server):
    with httpx.Client(base_url=live_server, trust_env=False) as api:
        add_office(api, "Planning")
        token = member_token(api, "mia", "Planning")
        start = head(api)
        with stream(live_server, token=token, after=start - 1) as blocks:
            (last,) = events_of(blocks, 1)
        assert int(last.id) == start


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_open_stream_ends_when_the_server_is_stopped(tmp_path, database_url):
    port = _free_port()
    env = {
        **os.environ,
        "OFFICIUM_DATABASE_URL": database_url,
        "OFFICIUM_DATA_DIR": str(tmp_path / "served"),
    }
    command = [str(Path(sys.executable).parent / "officium"), "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                if httpx.get(f"{base}/readyz", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        with stream(base, after=0) as blocks:
            (first,) = events_of(blocks, 1)
            assert first.event == "register.bootstrapped"
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            for _ in blocks:  # the stream ends (completely) when the server stops
                pass
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
        assert time.monotonic() - stopped_at < 10
        errors = process.stderr.read().decode()
        assert "Traceback" not in errors and "ERROR" not in errors, errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


# ------------------------------------------------------------------- webhooks


class Receiver:
    """A real HTTP receiver on loopback that fails its first ``failures`` requests."""

    def __init__(self, *, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                failing = len(receiver.requests) <= receiver.failures
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                """Quiet."""

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/officium"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def seqs(self) -> list[int]:
        return [json.loads(body)["seq"] for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def quiet(app) -> Iterator[TestClient]:
    """The app without its lifespan: no background dispatcher, the test drives every pass."""
    client = TestClient(app, base_url="http://testserver")
    yield client
    client.close()
    app.state.db.dispose()


@pytest.fixture
def plans(quiet) -> AgentDouble:
    add_office(quiet, "Planning")
    return add_folder(quiet, "plans", "Planning")


def create_webhook(client, **body) -> dict:
    response = client.post("/api/v1/webhooks", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def delivery_log(client, webhook_id: int) -> list[dict]:
    response = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def at(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_webhook_retries_a_failing_receiver_with_backoff_then_delivers_in_order(
    quiet, app, settings, plans, receiver
):
    db = app.state.db
    hook = receiver(failures=2)
    created = create_webhook(quiet, url=hook.url, folder="plans")
    assert created["secret"].startswith("whsec_")
    assert created["filters"] == {"document": None, "folder": "plans", "office": None}
    plans.save("plan.docx", b"v1")
    add_office(quiet, "Finance")  # not about the folder: never delivered
    plans.save("plan.docx", b"v2")
    plans.save("budget.xlsx", b"b1")
    expected = [
        event
        for event in trail(quiet, after=created["delivered_seq"])
        if event["subject"].get("folder") is not None
    ]
    assert len(expected) == 5

    now = utcnow()
    assert notifications.deliver_due(db, settings, now) == 1  # first attempt: 500
    assert notifications.deliver_due(db, settings, now) == 0  # not due again yet
    (failed,) = delivery_log(quiet, created["id"])
    retry_at = at(failed["next_attempt_at"])
    assert retry_at - at(failed["at"]) == timedelta(seconds=RETRY_BASE)
    assert notifications.deliver_due(db, settings, retry_at - timedelta(milliseconds=1)) == 0

    assert notifications.deliver_due(db, settings, retry_at) == 1  # second attempt: 500
    second = delivery_log(quiet, created["id"])[-1]
    retry_at = at(second["next_attempt_at"])
    assert retry_at - at(second["at"]) == timedelta(seconds=2 * RETRY_BASE)
    assert notifications.deliver_due(db, settings, retry_at - timedelta(milliseconds=1)) == 0

    # The third attempt succeeds, and the rest follow in the same pass.
    assert notifications.deliver_due(db, settings, retry_at) == 5
    assert notifications.deliver_due(db, settings, retry_at + timedelta(hours=1)) == 0

    first_seq = expected[0]["seq"]
    assert hook.seqs() == [first_seq, first_seq] + [event["seq"] for event in expected]
    for headers, body in hook.requests:
        mac = hmac.new(created["secret"].encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Officium-Signature"], f"sha256={mac}")
        assert headers["X-Officium-Event-Seq"] == str(json.loads(body)["seq"])
        assert headers["Content-Type"] == "application/json"
    delivered = [json.loads(body) for _, body in hook.requests[2:]]
    assert delivered == [
        {"seq": e["seq"], "hash": e["hash"], "event": json.loads(e["canonical"])} for e in expected
    ]

    log = delivery_log(quiet, created["id"])
    assert [(e["seq"], e["attempt"], e["ok"], e["status_code"]) for e in log] == [
        (first_seq, 1, False, 500),
        (first_seq, 2, False, 500),
        (first_seq, 3, True, 204),
    ] + [(event["seq"], 1, True, 204) for event in expected[1:]]
    assert all("HTTP 500" in e["error"] and e["next_attempt_at"] for e in log[:2])
    assert all(e["error"] is None and e["next_attempt_at"] is None for e in log[2:])

    (listed,) = quiet.get("/api/v1/webhooks", headers=ADMIN).json()["webhooks"]
    assert "secret" not in listed
    assert listed["delivered_seq"] == head(quiet)
    assert (listed["failures"], listed["next_attempt_at"]) == (0, None)


def test_backoff_doubles_up_to_five_minutes(settings):
    delays = [notifications.retry_delay(settings, n).total_seconds() for n in range(1, 14)]
    assert delays[:4] == [RETRY_BASE, 2 * RETRY_BASE, 4 * RETRY_BASE, 8 * RETRY_BASE]
    assert delays[-1] == 300 and max(delays) == 300
    assert notifications.retry_delay(settings, 10_000) == timedelta(minutes=5)


def test_an_unreachable_receiver_is_logged_and_nothing_is_skipped(quiet, app, settings, plans):
    db = app.state.db
    port = _free_port()  # nothing listens there
    created = create_webhook(quiet, url=f"http://127.0.0.1:{port}/hook")
    plans.save("plan.docx", b"v1")
    first = created["delivered_seq"] + 1

    now = utcnow()
    for _ in range(3):
        assert notifications.deliver_due(db, settings, now) == 1
        now = at(delivery_log(quiet, created["id"])[-1]["next_attempt_at"])
    log = delivery_log(quiet, created["id"])
    assert [(e["seq"], e["attempt"], e["ok"], e["status_code"]) for e in log] == [
        (first, 1, False, None),
        (first, 2, False, None),
        (first, 3, False, None),
    ]
    assert all("ConnectError" in e["error"] for e in log)
    (listed,) = quiet.get("/api/v1/webhooks", headers=ADMIN).json()["webhooks"]
    assert listed["delivered_seq"] == first - 1
    assert listed["failures"] == 3


def test_concurrent_passes_deliver_each_event_once(quiet, app, settings, plans, receiver):
    db = app.state.db
    hook = receiver()
    created = create_webhook(quiet, url=hook.url)
    for n in range(12):
        plans.save(f"file-{n}.txt", f"content {n}".encode())
    expected = trail(quiet, after=created["delivered_seq"])
    assert len(expected) == 24

    now = utcnow()
    passes = [
        threading.Thread(target=notifications.deliver_due, args=(db, settings, now))
        for _ in range(4)
    ]
    for each in passes:
        each.start()
    for each in passes:
        each.join(timeout=30)
    notifications.deliver_due(db, settings, now + timedelta(minutes=2))  # any left over
    assert hook.seqs() == [event["seq"] for event in expected]


def test_a_lease_held_by_a_stalled_pass_is_taken_over_when_it_runs_out(
    quiet, app, settings, plans, receiver
):
    db = app.state.db
    hook = receiver()
    created = create_webhook(quiet, url=hook.url)
    plans.save("plan.docx", b"v1")
    now = utcnow()
    with db.writing() as session:  # a pass on another replica claimed it, then stalled
        row = session.get(Webhook, created["id"])
        row.lease_owner, row.lease_until = "elsewhere", now + timedelta(seconds=60)
        session.add(row)
    assert notifications.deliver_due(db, settings, now) == 0
    assert notifications.deliver_due(db, settings, now + timedelta(seconds=60)) == 2
    assert hook.seqs() == [created["delivered_seq"] + 1, created["delivered_seq"] + 2]


def test_removed_webhooks_get_nothing_and_the_trail_keeps_no_secret(
    quiet, app, settings, plans, receiver
):
    db = app.state.db
    hook = receiver()
    created = create_webhook(quiet, url=hook.url + "/T0001/B0002/s3cr3tpath", office="Planning")
    removed = quiet.delete(f"/api/v1/webhooks/{created['id']}", headers=ADMIN)
    assert removed.status_code == 200, removed.text
    assert removed.json()["active"] is False
    assert removed.json()["deactivated_at"] is not None
    again = quiet.delete(f"/api/v1/webhooks/{created['id']}", headers=ADMIN)
    assert again.status_code == 409
    assert quiet.delete("/api/v1/webhooks/999", headers=ADMIN).status_code == 404

    plans.save("plan.docx", b"v1")
    assert notifications.deliver_due(db, settings, utcnow() + timedelta(hours=1)) == 0
    assert hook.requests == []

    recorded = {event["action"]: event for event in trail(quiet)}
    made, gone = recorded["webhook.created"], recorded["webhook.removed"]
    assert made["subject"] == gone["subject"] == {"webhook": created["id"]}
    assert made["details"]["origin"] == f"http://127.0.0.1:{hook.server.server_address[1]}"
    assert made["details"]["url_sha256"] == hashlib.sha256(created["url"].encode()).hexdigest()
    assert made["details"]["filters"] == {"document": None, "folder": None, "office": "Planning"}
    text = "".join(event["canonical"] for event in trail(quiet))
    assert created["secret"] not in text
    assert "s3cr3tpath" not in text


def test_the_running_server_delivers_without_being_asked(http, receiver):
    hook = receiver(failures=1)
    created = create_webhook(http, url=hook.url)
    add_office(http, "Finance")
    wanted = [created["delivered_seq"] + 1]
    deadline = time.monotonic() + 20
    while hook.seqs() != wanted * 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook.seqs() == wanted * 2  # failed once, retried after the backoff


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "https://exa mple.org/",
        "example.org/hook",
        "http://example.org:99999/",
        "",
    ],
)
def test_only_http_urls_are_accepted(http, url):
    response = http.post("/api/v1/webhooks", json={"url": url}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "url" in response.json()["detail"]


def test_webhook_filters_must_name_recorded_things(http):
    for body, named in (
        ({"folder": "nowhere"}, "nowhere"),
        ({"office": "Nobody"}, "Nobody"),
        ({"document": 4242}, "4242"),
    ):
        response = http.post(
            "/api/v1/webhooks", json={"url": "https://example.org/h", **body}, headers=ADMIN
        )
        assert response.status_code == 404, response.text
        assert named in response.json()["detail"]


def test_webhooks_are_for_admins_only(http):
    add_office(http, "Planning")
    member = {"Authorization": f"Bearer {member_token(http, 'mia', 'Planning')}"}
    body = {"url": "https://example.org/h"}
    assert http.post("/api/v1/webhooks", json=body).status_code == 401
    for method, path in (
        ("POST", "/api/v1/webhooks"),
        ("GET", "/api/v1/webhooks"),
        ("DELETE", "/api/v1/webhooks/1"),
        ("GET", "/api/v1/webhooks/1/deliveries"),
    ):
        response = http.request(
            method, path, json=body if method == "POST" else None, headers=member
        )
        assert response.status_code == 403, (method, path, response.text)
    assert http.get("/api/v1/webhooks", headers=ADMIN).json() == {"webhooks": []}
