"""One test per refusal: the status, a problem+json body a person can read, and proof
that nothing was written (audit head, every table and the content store unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel
from starlette.testclient import TestClient

from server.app import create_app
from server.models import AuditHead
from tests.conftest import ADMIN_TOKEN, AgentDouble, sha

API = "/api/v1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


def assert_problem(response, status: int, *mentions: str) -> dict:
    """``response`` is an RFC 9457 problem with ``status`` and a detail naming ``mentions``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:officium:problem:")
    assert isinstance(body["title"], str) and body["title"].strip()
    assert isinstance(body["detail"], str) and len(body["detail"].strip()) > 10
    for words in mentions:
        assert words in body["detail"], body["detail"]
    return body


def each(cases, check) -> None:
    """Run ``check(*case)`` for every row of a table; report every failing row at once.

    The rows share one app and one database, which keeps the suite fast on PostgreSQL
    (a fresh database per test costs a CREATE DATABASE).
    """
    failures = []
    for case in cases:
        try:
            check(*case)
        except AssertionError as exc:
            failures.append(f"{case!r}: {exc}")
    assert not failures, "\n".join(failures)


def snapshot(app) -> tuple:
    """Everything a refusal must leave alone: chain head, row counts, stored files."""
    with app.state.db.reading() as session:
        head = session.get(AuditHead, 1)
        rows = {
            table.name: session.exec(sa.select(sa.func.count()).select_from(table)).one()[0]
            for table in SQLModel.metadata.sorted_tables
        }
        head = (head.seq, head.hash)
    root = app.state.store.root
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return head, rows, files


@contextmanager
def nothing_written(app) -> Iterator[None]:
    before = snapshot(app)
    yield
    assert snapshot(app) == before


def person_token(http, username: str, office: str, role: str) -> str:
    http.post(f"{API}/persons", json={"username": username}, headers=ADMIN)
    grant = {"username": username, "office": office, "role": role}
    assert http.post(f"{API}/memberships", json=grant, headers=ADMIN).status_code == 201
    response = http.post(f"{API}/tokens", json={"username": username}, headers=ADMIN)
    assert response.status_code == 201
    return response.json()["token"]


@pytest.fixture
def member(http, office_and_folder) -> str:
    """A token for 'mia', a plain member of Planning."""
    return person_token(http, "mia", "Planning", "member")


@pytest.fixture
def archive(http, office_and_folder) -> AgentDouble:
    """A second folder 'archive' with its own agent."""
    body = {"name": "archive", "root": "/srv/share/archive", "default_owner": "Planning"}
    assert http.post(f"{API}/folders", json=body, headers=ADMIN).status_code == 201
    token = http.post(f"{API}/tokens", json={"folder": "archive"}, headers=ADMIN).json()["token"]
    return AgentDouble(http, token, "archive")


def post_reports(http, folder: str, token: str, reports: list[dict]):
    # json.dumps escapes lone surrogates, so malformed names reach the server as they would
    # from a client that sent them.
    return http.post(
        f"{API}/folders/{folder}/reports",
        content=json.dumps({"reports": reports}).encode(),
        headers={**bearer(token), "Content-Type": "application/json"},
    )


# ------------------------------------------------------------------ content


def test_an_upload_whose_bytes_do_not_match_its_hash_keeps_nothing(http, agent, app):
    claimed = sha(b"what the agent meant to send")
    with nothing_written(app):
        response = agent.http.put(f"{API}/content/{claimed}", content=b"what arrived",
                                  headers=agent.headers)
        assert_problem(response, 422, claimed, sha(b"what arrived"), "nothing was kept")
    for digest in (claimed, sha(b"what arrived")):
        assert http.head(f"{API}/content/{digest}", headers=ADMIN).status_code == 404


def test_an_upload_by_a_person_without_admin_is_forbidden(http, member, app):
    with nothing_written(app):
        response = http.put(f"{API}/content/{sha(b'x')}", content=b"x", headers=bearer(member))
        assert_problem(response, 403, "'mia'")


def test_an_upload_under_something_that_is_not_a_sha256_is_refused(http, agent, app):
    def check(digest):
        response = http.put(f"{API}/content/{digest}", content=b"x", headers=agent.headers)
        assert_problem(response, 422, "SHA-256")

    with nothing_written(app):
        each([("xyz",), ("a" * 63,), ("a" * 65,), ("g" * 64,), ("%00" + "a" * 61,)], check)


# ------------------------------------------------------------------ reports


def test_a_report_of_content_never_uploaded_is_a_conflict(agent, app):
    entry = agent.entry("plan.docx", b"never sent", kind="created")
    with nothing_written(app):
        problem = agent.report(entry, expect=409)
    assert sha(b"never sent") in problem["detail"]
    assert "upload it" in problem["detail"]


def test_a_report_whose_size_disagrees_with_the_stored_bytes_is_refused(agent, app):
    agent.upload(b"four")
    entry = agent.entry("plan.docx", b"four", kind="created") | {"size": 5}
    with nothing_written(app):
        problem = agent.report(entry, expect=422)
    assert "5 bytes" in problem["detail"] and "4" in problem["detail"]


def test_an_agent_cannot_report_into_another_folder(http, agent, archive, app):
    archive.upload(b"x")
    with nothing_written(app):
        response = post_reports(http, "archive", agent.token, [agent.entry("a.txt", b"x")])
        assert_problem(response, 403, "'archive'", "agent of folder 'plans'")


@pytest.mark.parametrize("who", ["admin", "member"])
def test_a_person_cannot_report_versions(http, agent, member, app, who):
    agent.upload(b"x")
    token = ADMIN_TOKEN if who == "admin" else member
    with nothing_written(app):
        response = post_reports(http, "plans", token, [agent.entry("a.txt", b"x")])
        assert_problem(response, 403, "only the agent of folder 'plans'")


def test_a_report_into_an_unknown_folder_is_not_found(http, agent, app):
    with nothing_written(app):
        response = post_reports(http, "nowhere", agent.token, [agent.entry("a.txt", None,
                                                                          kind="deleted")])
        assert_problem(response, 404, "'nowhere'")


BAD_PATHS = [
    ("../outside.txt", "'..'"),
    ("a/../../outside.txt", "'..'"),
    ("..", "'..'"),
    ("/etc/passwd", "absolute"),
    ("C:/Users/x.docx", "absolute"),
    ("a\\b.docx", "separator"),
    ("a\x00b.docx", "NUL"),
    ("a\nb.docx", "control character"),
    ("bad\udcff.docx", "unicode"),  # how os.fsdecode spells a name that is not UTF-8
    ("", "names no file"),
    ("./", "names no file"),
]


def test_a_report_with_a_path_outside_its_folder_is_refused(http, agent, app):
    agent.upload(b"x")

    def check(field, path, says):
        entry = agent.entry("good.txt", b"x", kind="renamed", from_path="old.txt") | {field: path}
        response = post_reports(http, "plans", agent.token, [entry])
        assert_problem(response, 422, field, says)

    with nothing_written(app):
        each([(field, *bad) for field in ("path", "from_path") for bad in BAD_PATHS], check)


def test_a_lookup_with_a_path_outside_its_folder_is_refused(http, agent, app):
    agent.save("good.txt", b"x")

    def check(path, says):
        response = http.get(f"{API}/documents/lookup", params={"folder": "plans", "path": path},
                            headers=ADMIN)
        assert_problem(response, 422, "path", says)

    with nothing_written(app):
        each([bad for bad in BAD_PATHS if "\udcff" not in bad[0]], check)


def _long_path(characters: int) -> str:
    """A path of ``characters`` hex digits that compresses badly, as real names do."""
    digits = "".join(sha(str(n).encode()) for n in range(characters // 64 + 1))
    return "/".join(digits[i : i + 200] for i in range(0, characters, 200))[:characters]


def test_a_long_path_is_recorded_or_refused_never_a_server_error(http, agent, app):
    agent.upload(b"x")
    for characters in (2000, 3000, 4096):
        path = _long_path(characters)
        assert len(path) == characters
        response = post_reports(http, "plans", agent.token, [agent.entry(path, b"x")])
        if response.status_code != 200:
            assert_problem(response, 422, "long")


def test_a_batch_is_recorded_all_or_none(http, agent, app):
    agent.upload(b"first")
    good = agent.entry("first.txt", b"first", kind="created")
    missing = agent.entry("second.txt", b"never uploaded", kind="created")
    with nothing_written(app):
        problem = agent.report(good, missing, expect=409)
    assert "report 1" in problem["detail"] and "second.txt" in problem["detail"]
    lookup = http.get(f"{API}/documents/lookup", params={"folder": "plans", "path": "first.txt"},
                      headers=ADMIN)
    assert_problem(lookup, 404, "first.txt")
    # The failed batch used up nothing: the first report alone is then recorded as new.
    result = agent.report(good)["results"][0]
    assert (result["outcome"], result["replayed"]) == ("recorded", False)


def test_a_batch_with_one_malformed_report_is_refused_whole(http, agent, app):
    agent.upload(b"first")
    good = agent.entry("first.txt", b"first", kind="created")
    bad = agent.entry("second.txt", b"first", kind="renamed")  # no from_path
    with nothing_written(app):
        response = post_reports(http, "plans", agent.token, [good, bad])
        assert_problem(response, 422, "reports.1", "from_path")


def test_a_batch_must_hold_one_to_a_thousand_reports(http, agent, app):
    def check(count):
        reports = [agent.entry(f"f{i}.txt", None, kind="deleted") for i in range(count)]
        assert_problem(post_reports(http, "plans", agent.token, reports), 422, "reports")

    with nothing_written(app):
        each([(0,), (1001,)], check)


# ----------------------------------------------------------------- the limits


@pytest.fixture
def limited(settings):
    """The app with a 1000-byte upload limit and a 1024-byte JSON limit, and its agent."""
    small = settings.model_copy(update={"max_upload_bytes": 1000, "max_json_bytes": 1024})
    app = create_app(small)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.post(f"{API}/offices", json={"name": "Planning"},
                           headers=ADMIN).status_code == 201
        body = {"name": "plans", "root": "/srv/plans", "default_owner": "Planning"}
        assert client.post(f"{API}/folders", json=body, headers=ADMIN).status_code == 201
        token = client.post(f"{API}/tokens", json={"folder": "plans"}, headers=ADMIN).json()
        yield app, AgentDouble(client, token["token"], "plans")


def test_an_upload_at_the_limit_is_stored(limited):
    _, agent = limited
    assert agent.upload(b"x" * 1000).status_code == 201


def test_an_oversized_upload_is_refused_with_the_limit(limited):
    app, agent = limited
    data = b"x" * 1001
    with nothing_written(app):
        response = agent.http.put(f"{API}/content/{sha(data)}", content=data, headers=agent.headers)
        assert_problem(response, 413, "limit of 1000 bytes")


def test_an_oversized_streamed_upload_is_refused_with_the_limit(limited):
    app, agent = limited
    chunks = [b"y" * 400] * 4  # no Content-Length: the store counts as it receives

    with nothing_written(app):
        response = agent.http.put(f"{API}/content/{sha(b''.join(chunks))}", content=iter(chunks),
                                  headers=agent.headers)
        assert_problem(response, 413, "limit of 1000 bytes")


def test_a_json_body_over_the_limit_is_refused(limited):
    app, agent = limited
    with nothing_written(app):
        response = agent.http.post(f"{API}/offices", json={"name": "x" * 2000}, headers=ADMIN)
        assert_problem(response, 413, "1024")


def test_a_streamed_json_body_over_the_limit_is_refused(limited):
    app, agent = limited
    chunks = [b'{"name": "', b"x" * 600, b"x" * 600, b'"}']
    with nothing_written(app):
        response = agent.http.post(f"{API}/offices", content=iter(chunks),
                                   headers={**ADMIN, "Content-Type": "application/json"})
        assert_problem(response, 413, "1024")


def test_a_streamed_json_body_over_the_limit_is_never_a_server_error(limited):
    app, agent = limited
    chunks = [b'{"name": "', b"x" * 600, b"x" * 600, b'"}']
    with nothing_written(app):
        response = agent.http.post(f"{API}/offices", content=iter(chunks),
                                   headers={**ADMIN, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"].startswith("application/problem+json")


# ------------------------------------------------------------- who may call


UNAUTHENTICATED = [
    ({}, "Authorization: Bearer"),
    ({"Authorization": "Bearer"}, "Authorization: Bearer"),
    ({"Authorization": f"Basic {ADMIN_TOKEN}"}, "Authorization: Bearer"),
    ({"Authorization": "Bearer off_not-a-token-anyone-was-given"}, "not known"),
    ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, "not known"),
]


def test_a_request_without_a_valid_token_is_unauthenticated(http, app):
    def check(headers, says, method, path):
        response = http.request(method, API + path, json={"name": "X"}, headers=headers)
        assert_problem(response, 401, says)
        assert response.headers["WWW-Authenticate"] == "Bearer"

    calls = [("GET", "/me"), ("POST", "/offices"), ("GET", "/documents"), ("GET", "/tokens")]
    with nothing_written(app):
        each([(*case, *call) for case in UNAUTHENTICATED for call in calls], check)


def test_a_revoked_token_is_unauthenticated(http, member, app):
    tokens = http.get(f"{API}/tokens", headers=ADMIN).json()["tokens"]
    token_id = next(t["id"] for t in tokens if t["username"] == "mia")
    assert http.delete(f"{API}/tokens/{token_id}", headers=ADMIN).status_code == 200
    with nothing_written(app):
        assert_problem(http.get(f"{API}/me", headers=bearer(member)), 401, "revoked")
        assert_problem(http.get(f"{API}/documents", headers=bearer(member)), 401, "revoked")


MEMBER_REFUSED = [
    ("POST", "/offices", {"name": "Shadow Office"}, "'admin' role"),
    ("POST", "/persons", {"username": "eve"}, "'admin' role"),
    ("POST", "/memberships", {"username": "mia", "office": "Planning", "role": "admin"},
     "'admin' role"),
    ("POST", "/tokens", {"username": "mia"}, "'admin' role"),
    ("GET", "/tokens", None, "'admin' role"),
    ("DELETE", "/tokens/1", None, "'admin' role"),
    ("POST", "/folders", {"name": "f", "root": "/f"}, "'admin' role"),
    ("GET", "/audit/events", None, "auditor or admin"),
    ("GET", "/audit/verify", None, "auditor or admin"),
]


def test_a_member_is_refused_what_needs_another_role(http, member, app):
    def check(method, path, body, says):
        response = http.request(method, API + path, json=body, headers=bearer(member))
        assert_problem(response, 403, says, "'mia'")

    with nothing_written(app):
        each(MEMBER_REFUSED, check)


def test_an_agent_is_refused_what_persons_do(http, agent, app):
    agent.save("a.txt", b"a")

    def check(method, path, body):
        response = http.request(method, API + path, json=body, headers=agent.headers)
        assert_problem(response, 403, "agent of folder 'plans'")

    with nothing_written(app):
        each(
            [
                ("POST", "/offices", {"name": "Shadow Office"}),
                ("POST", "/tokens", {"folder": "plans"}),
                ("GET", "/audit/events", None),
                ("POST", "/documents/1/owner", {"office": "Planning"}),
            ],
            check,
        )


# ------------------------------------------------------------ malformed input


MALFORMED_BODIES = [
    (b'{"name": ', "not valid JSON"),
    (b"{bad}", "not valid JSON"),
    (b"", "Field required"),
    (b"[1, 2]", "valid dictionary"),
    (b'"Planning"', "valid dictionary"),
    (b'{"name": 5}', "name"),
    (b'{"nom": "Planning"}', "name"),
    (b'{"name": "Planning", "colour": "red"}', "colour"),
    (b'{"name": "   "}', "blank"),
    (b'{"name": "a\\u0000b"}', "NUL"),
    (b'{"name": "\\ud800"}', "name"),
    (b'{"name": "' + b"x" * 201 + b'"}', "200 characters"),
]


def test_a_malformed_body_is_invalid(http, app):
    def check(content, says):
        response = http.post(f"{API}/offices", content=content,
                             headers={**ADMIN, "Content-Type": "application/json"})
        assert_problem(response, 422, says)

    with nothing_written(app):
        each(MALFORMED_BODIES, check)


def test_a_body_that_is_not_utf8_is_invalid(http, app):
    with nothing_written(app):
        response = http.post(f"{API}/offices", content=b'{"name": "\xff\xfe"}',
                             headers={**ADMIN, "Content-Type": "application/json"})
        assert_problem(response, 422)


def test_a_body_that_is_not_utf8_is_never_a_server_error(http, app):
    with nothing_written(app):
        response = http.post(f"{API}/offices", content=b'{"name": "\xff\xfe"}',
                             headers={**ADMIN, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"].startswith("application/problem+json")


def test_a_malformed_person_is_invalid(http, app):
    def check(body, says):
        assert_problem(http.post(f"{API}/persons", json=body, headers=ADMIN), 422, says)

    with nothing_written(app):
        each(
            [
                ({"username": "Alice"}, "lower-case"),
                ({"username": ""}, "lower-case"),
                ({"username": "a" * 65}, "1-64"),
                ({"username": "alice", "name": "A\x00"}, "NUL"),
            ],
            check,
        )


def test_an_unknown_endpoint_is_a_problem(http, app):
    def check(method, path, status):
        assert_problem(http.request(method, path, headers=ADMIN), status)

    with nothing_written(app):
        each(
            [
                ("GET", "/api/v1/nothing-here", 404),
                ("GET", "/api/v2/documents", 404),
                ("POST", "/api/v1/documents/1/approve", 404),
                ("DELETE", "/api/v1/documents/1", 405),
                ("PATCH", "/api/v1/offices", 405),
            ],
            check,
        )


OUT_OF_RANGE = [
    ("GET", "/documents/0"),
    ("GET", "/documents/-1"),
    ("GET", f"/documents/{2**31}"),
    ("GET", f"/documents/{2**40}"),
    ("GET", f"/documents/{2**70}"),
    ("GET", "/documents/abc"),
    ("GET", "/documents/1.5"),
    ("GET", f"/documents/{2**40}/versions"),
    ("GET", f"/documents/{2**40}/history"),
    ("GET", "/documents/1/versions/0/content"),
    ("GET", f"/documents/1/versions/{2**40}/content"),
    ("POST", f"/documents/{2**40}/owner"),
    ("DELETE", "/tokens/0"),
    ("DELETE", f"/tokens/{2**40}"),
    ("GET", "/documents?after=-1"),
    ("GET", f"/documents?after={2**40}"),
    ("GET", "/documents?limit=0"),
    ("GET", "/documents?limit=501"),
    ("GET", "/documents?state=final"),
    ("GET", "/documents?deleted=maybe"),
    ("GET", "/audit/events?after=-1"),
    ("GET", f"/audit/events?after={2**63}"),
    ("GET", "/audit/events?limit=0"),
    ("GET", "/audit/events?limit=1001"),
]


def test_numbers_out_of_range_are_invalid_not_server_errors(http, agent, app):
    agent.save("a.txt", b"a")

    def check(method, path):
        response = http.request(method, API + path, json={"office": "Planning"}, headers=ADMIN)
        assert_problem(response, 422)

    with nothing_written(app):
        each(OUT_OF_RANGE, check)


def test_verify_refuses_what_is_not_a_sha256(http, app):
    def check(digest):
        assert_problem(http.get(f"{API}/verify/{digest}", headers=ADMIN), 422, "SHA-256")

    with nothing_written(app):
        each([(d,) for d in ("xyz", "0" * 63, "0" * 65, "z" * 64, "0" * 63 + " ", "%00" * 3)],
             check)


QUERIES_WITH_BAD_BYTES = [
    "/documents/lookup?folder=plans&path=%FF%FE.docx",
    "/documents/lookup?folder=plans&path=a%00b",
    "/documents/lookup?folder=pl%00ans&path=a.txt",
    "/documents/lookup?folder=%C0%AF&path=a.txt",
    "/documents/lookup?folder=plans&path=%2e%2e%2fetc%2fpasswd",
    "/documents/lookup?folder=plans",
    "/documents?prefix=%FF",
    "/documents?prefix=a%00",
    "/documents?folder=%ED%A0%80",
    "/documents?owner=%00",
    "/memberships?username=%FF",
    "/memberships?office=%00",
    "/documents/%00",
    "/verify/%FF" + "0" * 62,
]


def test_invalid_utf8_or_nul_in_a_query_is_never_a_server_error(http, agent, app):
    agent.save("a.txt", b"a")

    def check(url):
        response = http.get(API + url, headers=ADMIN)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert_problem(response, response.status_code)

    with nothing_written(app):
        each([(url,) for url in QUERIES_WITH_BAD_BYTES], check)


def test_nul_or_traversal_in_a_query_is_invalid(http, agent, app):
    agent.save("a.txt", b"a")

    def check(url):
        assert_problem(http.get(API + url, headers=ADMIN), 422)

    with nothing_written(app):
        each([(u,) for u in QUERIES_WITH_BAD_BYTES if "%00" in u or "%2e" in u], check)


def test_invalid_utf8_in_a_query_is_invalid(http, agent, app):
    agent.save("a.txt", b"a")

    def check(url):
        assert_problem(http.get(API + url, headers=ADMIN), 422, "UTF-8")

    each(
        [
            ("/documents/lookup?folder=plans&path=%FF%FE.docx",),
            ("/documents?prefix=%FF",),
            ("/documents?folder=%ED%A0%80",),
        ],
        check,
    )


DIRECTORY_CLASHES = [
    ("/offices", {"name": "Planning"}, 409, "already exists"),
    ("/offices", {"name": "Sub", "parent": "Nowhere"}, 404, "'Nowhere'"),
    ("/persons", {"username": "mia"}, 409, "already exists"),
    ("/memberships", {"username": "mia", "office": "Planning", "role": "member"}, 409,
     "already holds"),
    ("/memberships", {"username": "nobody", "office": "Planning", "role": "member"}, 404,
     "'nobody'"),
    ("/memberships", {"username": "mia", "office": "Nowhere", "role": "member"}, 404,
     "'Nowhere'"),
    ("/memberships", {"username": "mia", "office": "Planning", "role": "boss"}, 422, "role"),
    ("/tokens", {"username": "nobody"}, 404, "'nobody'"),
    ("/tokens", {"folder": "nowhere"}, 404, "'nowhere'"),
    ("/tokens", {}, 422, "exactly one"),
    ("/tokens", {"username": "mia", "folder": "plans"}, 422, "exactly one"),
    ("/folders", {"name": "plans", "root": "/x"}, 409, "already exists"),
    ("/folders", {"name": "new", "root": ""}, 422, "root"),
]


def test_directory_changes_that_clash_are_refused(http, member, app):
    def check(path, body, status, says):
        assert_problem(http.post(API + path, json=body, headers=ADMIN), status, says)

    with nothing_written(app):
        each(DIRECTORY_CLASHES, check)
