"""The register through the real app: directory, folders, version reports, queries,
ownership and the audit trail.

Every state change is checked twice: by what the API answers afterwards, and by the
exact audit events it appended (each re-hashed from its canonical text).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa

from core.canonical import is_canonical
from core.chain import GENESIS_HASH, verify_chain
from server.auth import hash_token
from server.models import AuditEvent, Document, Report, Version
from tests.conftest import ADMIN_TOKEN, AgentDouble, sha
from tests.tamper import lift_append_only_guards

API = "/api/v1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(http, method: str, path: str, *, token: str = ADMIN_TOKEN, expect: int = 200, **kwargs):
    """One API call that must answer ``expect``; returns the decoded JSON body."""
    response = http.request(method, API + path, headers=bearer(token), **kwargs)
    assert response.status_code == expect, response.text
    return response.json() if response.content else None


class Trail:
    """Reads the audit trail over HTTP and checks each event against its canonical text."""

    def __init__(self, http) -> None:
        self.http = http
        self.seen = self.head()

    def events(self, after: int = 0) -> list[dict]:
        found = []
        while True:
            page = call(self.http, "GET", "/audit/events", params={"after": after, "limit": 1000})
            found += page["events"]
            if page["next"] is None:
                return found
            after = page["next"]

    def head(self) -> int:
        return call(self.http, "GET", "/audit/verify")["head_seq"]

    def new(self) -> list[dict]:
        """Events appended since the last call, each checked; remembers where it stopped."""
        events = self.events(self.seen)
        for event in events:
            check_event(event)
        if events:
            self.seen = events[-1]["seq"]
        return events

    def new_actions(self) -> list[str]:
        return [event["action"] for event in self.new()]


def check_event(event: dict) -> None:
    """An event's canonical text re-hashes to its hash and holds exactly its fields."""
    data = event["canonical"].encode("utf-8")
    assert hashlib.sha256(data).hexdigest() == event["hash"]
    assert is_canonical(data)
    body = json.loads(data)
    assert body == {key: event[key] for key in
                    ("seq", "time", "actor", "action", "subject", "details", "prev")}
    assert set(body["actor"]) == {"id", "name", "office", "role"}


@pytest.fixture
def trail(http) -> Trail:
    return Trail(http)


def count(app, table) -> int:
    with app.state.db.reading() as session:
        return session.exec(sa.select(sa.func.count()).select_from(table)).one()[0]


def counts(app) -> tuple[int, ...]:
    return tuple(count(app, table) for table in (Document, Version, Report, AuditEvent))


def person_token(http, username: str, *grants: tuple[str, str], name: str | None = None) -> str:
    """Register a person with memberships ``(office, role)`` and return a token for them."""
    call(http, "POST", "/persons", json={"username": username, "name": name}, expect=201)
    for office, role in grants:
        body = {"username": username, "office": office, "role": role}
        call(http, "POST", "/memberships", json=body, expect=201)
    return call(http, "POST", "/tokens", json={"username": username}, expect=201)["token"]


def office(http, name: str, parent: str | None = None) -> dict:
    return call(http, "POST", "/offices", json={"name": name, "parent": parent}, expect=201)


def folder_agent(http, name: str, default_owner: str | None) -> AgentDouble:
    body = {"name": name, "root": f"/srv/share/{name}", "default_owner": default_owner}
    call(http, "POST", "/folders", json=body, expect=201)
    token = call(http, "POST", "/tokens", json={"folder": name}, expect=201)["token"]
    return AgentDouble(http, token, name)


def status(http, document_id: int) -> dict:
    return call(http, "GET", f"/documents/{document_id}")


def lookup(http, folder: str, path: str, *, expect: int = 200) -> dict:
    return call(http, "GET", "/documents/lookup", params={"folder": folder, "path": path},
                expect=expect)


def versions(http, document_id: int) -> list[dict]:
    return call(http, "GET", f"/documents/{document_id}/versions")["versions"]


# ----------------------------------------------------------------- directory


def test_the_bootstrap_admin_exists(http, trail):
    me = call(http, "GET", "/me")
    assert me["kind"] == "person"
    assert (me["username"], me["name"], me["folder"]) == ("admin", "Administrator", None)
    assert [(m["office"], m["role"]) for m in me["memberships"]] == [("Administration", "admin")]
    first = trail.events()[0]
    check_event(first)
    assert (first["seq"], first["action"]) == (1, "register.bootstrapped")
    assert first["prev"] == GENESIS_HASH
    assert first["actor"]["id"] == "system"
    assert first["details"]["username"] == "admin"


def test_offices_form_a_hierarchy(http, trail):
    directorate = office(http, "Directorate")
    planning = office(http, "Planning", parent="Directorate")
    assert directorate["parent"] is None
    assert planning["parent"] == "Directorate"
    listed = call(http, "GET", "/offices")["offices"]
    assert [(o["name"], o["parent"]) for o in listed] == [
        ("Administration", None),
        ("Directorate", None),
        ("Planning", "Directorate"),
    ]
    events = trail.new()
    assert [e["action"] for e in events] == ["office.created", "office.created"]
    assert events[1]["details"] == {"name": "Planning", "parent": "Directorate"}
    assert events[1]["subject"] == {"office": planning["id"]}
    assert events[1]["actor"]["name"] == "Administrator"
    assert (events[1]["actor"]["office"], events[1]["actor"]["role"]) == ("Administration", "admin")


def test_persons_and_memberships(http, trail):
    office(http, "Planning")
    office(http, "Legal")
    trail.new()
    alice = person_token(http, "alice", ("Planning", "member"), ("Legal", "approver"),
                         name="Alice Martin")
    call(http, "POST", "/persons", json={"username": "bob"}, expect=201)
    call(http, "POST", "/memberships", expect=201,
         json={"username": "bob", "office": "Planning", "role": "auditor"})
    persons = call(http, "GET", "/persons", token=alice)["persons"]
    assert [(p["username"], p["name"]) for p in persons] == [
        ("admin", "Administrator"), ("alice", "Alice Martin"), ("bob", "bob"),
    ]
    of_alice = call(http, "GET", "/memberships", params={"username": "alice"})["memberships"]
    assert {(m["office"], m["role"]) for m in of_alice} == {("Planning", "member"),
                                                            ("Legal", "approver")}
    of_planning = call(http, "GET", "/memberships", params={"office": "Planning"})["memberships"]
    assert {(m["username"], m["role"]) for m in of_planning} == {("alice", "member"),
                                                                ("bob", "auditor")}
    me = call(http, "GET", "/me", token=alice)
    assert (me["username"], me["name"]) == ("alice", "Alice Martin")
    assert {(m["office"], m["role"]) for m in me["memberships"]} == {("Planning", "member"),
                                                                     ("Legal", "approver")}
    assert trail.new_actions() == [
        "person.created", "membership.granted", "membership.granted", "token.created",
        "person.created", "membership.granted",
    ]


def test_tokens_are_shown_once_listed_without_secrets_and_revocable(http, trail):
    call(http, "POST", "/persons", json={"username": "alice"}, expect=201)
    trail.new()
    created = call(http, "POST", "/tokens", json={"username": "alice", "label": "laptop"},
                   expect=201)
    secret = created["token"]
    assert secret.startswith("off_") and len(secret) > 40
    assert call(http, "GET", "/me", token=secret)["username"] == "alice"

    listing = http.get(f"{API}/tokens", headers=bearer(ADMIN_TOKEN))
    assert listing.status_code == 200
    assert secret not in listing.text
    assert hash_token(secret) not in listing.text
    mine = [t for t in listing.json()["tokens"] if t["id"] == created["id"]]
    assert mine == [{
        "id": created["id"], "username": "alice", "folder": None, "label": "laptop",
        "created_at": mine[0]["created_at"], "revoked_at": None,
    }]

    revoked = call(http, "DELETE", f"/tokens/{created['id']}")
    assert revoked["revoked_at"] is not None
    refused = http.get(f"{API}/me", headers=bearer(secret))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    listed = {t["id"]: t for t in call(http, "GET", "/tokens")["tokens"]}
    assert listed[created["id"]]["revoked_at"] is not None
    events = trail.new()
    assert [e["action"] for e in events] == ["token.created", "token.revoked"]
    assert events[1]["subject"] == {"token": created["id"]}
    assert secret not in json.dumps(events)
    # Revoking twice is refused and records nothing.
    call(http, "DELETE", f"/tokens/{created['id']}", expect=409)
    assert trail.new() == []


def test_folders_and_their_agent_tokens(http, trail):
    office(http, "Planning")
    trail.new()
    owned = call(http, "POST", "/folders", expect=201,
                 json={"name": "plans", "root": "/srv/share/plans", "default_owner": "Planning"})
    unowned = call(http, "POST", "/folders", expect=201,
                   json={"name": "inbox", "root": "D:\\Shares\\Inbox"})
    assert (owned["default_owner"], unowned["default_owner"]) == ("Planning", None)
    listed = call(http, "GET", "/folders")["folders"]
    assert [(f["name"], f["root"], f["default_owner"]) for f in listed] == [
        ("plans", "/srv/share/plans", "Planning"),
        ("inbox", "D:\\Shares\\Inbox", None),
    ]
    token = call(http, "POST", "/tokens", json={"folder": "plans"}, expect=201)["token"]
    me = call(http, "GET", "/me", token=token)
    assert (me["kind"], me["folder"], me["username"], me["memberships"]) == (
        "agent", "plans", None, [])
    assert trail.new_actions() == ["folder.created", "folder.created", "token.created"]
    # A second folder of the same name, or one owned by an unknown office, is refused.
    call(http, "POST", "/folders", json={"name": "plans", "root": "/x"}, expect=409)
    call(http, "POST", "/folders", json={"name": "x", "root": "/x", "default_owner": "Nobody"},
         expect=404)
    assert trail.new() == []


# ---------------------------------------------------------- version reports


def test_a_new_file_becomes_version_1_owned_by_the_folder_default(http, agent, trail):
    result = agent.save("drafts/plan.docx", b"first draft", kind="created",
                        author_hint="uid 1000")
    assert (result["outcome"], result["replayed"], result["kind"]) == ("recorded", False, "created")
    assert result["version"] == {"number": 1, "sha256": sha(b"first draft")}
    document = status(http, result["document_id"])
    assert (document["folder"], document["path"], document["owner_office"]) == (
        "plans", "drafts/plan.docx", "Planning")
    assert (document["state"], document["deleted"], document["final"], document["awaiting"]) == (
        "draft", False, None, [])
    assert document["latest"] == {"number": 1, "sha256": sha(b"first draft")}
    [version] = versions(http, result["document_id"])
    assert (version["number"], version["sha256"], version["size"]) == (1, sha(b"first draft"), 11)
    assert (version["author"], version["author_hint"]) == ("unknown", "uid 1000")
    events = trail.new()
    assert [e["action"] for e in events] == ["document.created", "version.recorded"]
    created, recorded = events
    assert created["subject"]["document"] == result["document_id"]
    assert created["actor"]["id"].startswith("agent:")
    assert recorded["details"]["number"] == 1
    assert recorded["details"]["sha256"] == sha(b"first draft")
    assert recorded["details"]["size"] == 11


def test_an_edit_becomes_the_next_version_and_the_same_bytes_nothing(http, agent, app, trail):
    first = agent.save("plan.docx", b"v1", kind="created")
    second = agent.save("plan.docx", b"v2")
    assert second["document_id"] == first["document_id"]
    assert (second["outcome"], second["version"]["number"]) == ("recorded", 2)
    assert trail.new_actions() == ["document.created", "version.recorded", "version.recorded"]
    before = counts(app)
    same = agent.save("plan.docx", b"v2")
    assert same["outcome"] == "unchanged"
    assert same["version"] == {"number": 2, "sha256": sha(b"v2")}
    assert [v["number"] for v in versions(http, first["document_id"])] == [1, 2]
    assert trail.new() == []
    documents, version_rows, reports, events = counts(app)
    assert (documents, version_rows, events) == before[:2] + before[3:]
    assert reports == before[2] + 1  # the report itself is kept, for replay


def test_versions_are_attributed_to_registered_persons_only(http, agent):
    call(http, "POST", "/persons", json={"username": "alice"}, expect=201)
    known = agent.save("a.txt", b"a", author="alice", author_hint="owner uid 1001")
    unknown = agent.save("b.txt", b"b", author="zed")
    [by_alice] = versions(http, known["document_id"])
    [by_zed] = versions(http, unknown["document_id"])
    assert (by_alice["author"], by_alice["author_hint"]) == ("alice", "owner uid 1001")
    assert by_zed["author"] == "unknown"
    assert "zed" in by_zed["author_hint"]


def test_a_longest_author_hint_is_kept_for_an_unknown_author(http, agent):
    hint = "opened by " + "h" * 1990
    saved = agent.save("a.txt", b"a", author="zed", author_hint=hint)
    [version] = versions(http, saved["document_id"])
    assert version["author"] == "unknown"
    assert "zed" in version["author_hint"]


def test_a_replayed_report_returns_the_first_answer_and_records_nothing(http, agent, app, trail):
    assert agent.upload(b"content").status_code == 201
    entry = agent.entry("plan.docx", b"content", kind="created")
    first = agent.report(entry)["results"][0]
    trail.new()
    before = counts(app)
    again = agent.report(entry)["results"][0]
    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in first.items() if k != "replayed"}
    # Replays inside one batch, and after later versions, answer the same way.
    agent.save("plan.docx", b"later")
    trail.new()
    before = counts(app)
    batch = agent.report(entry, entry)["results"]
    assert [r["replayed"] for r in batch] == [True, True]
    assert [r["version"] for r in batch] == [first["version"]] * 2
    assert counts(app) == before
    assert trail.new() == []


def test_the_same_commit_and_path_cannot_say_something_else(http, agent, app, trail):
    entry = agent.entry("plan.docx", b"one", kind="created")
    agent.upload(b"one")
    agent.upload(b"two")
    agent.report(entry)
    trail.new()
    before = counts(app)
    other = {**entry, "sha256": sha(b"two"), "size": 3}
    problem = agent.report(other, expect=409)
    assert entry["commit"][:12] in problem["detail"]
    deleted = {k: v for k, v in entry.items() if k not in ("sha256", "size")} | {"kind": "deleted"}
    agent.report(deleted, expect=409)
    assert counts(app) == before
    assert trail.new() == []


def test_a_replayed_deletion_answers_as_the_first_time(agent):
    agent.save("plan.docx", b"v1")
    entry = agent.entry("plan.docx", None, kind="deleted")
    first = agent.report(entry)["results"][0]
    again = agent.report(entry)["results"][0]
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert {**again, "replayed": False} == first


def test_a_rename_keeps_the_document_and_its_history(http, agent, trail):
    first = agent.save("drafts/plan.docx", b"v1", kind="created")
    trail.new()
    moved = agent.save("final/plan.docx", b"v1", kind="renamed", from_path="drafts/plan.docx")
    assert (moved["outcome"], moved["document_id"]) == ("moved", first["document_id"])
    assert moved["version"] == {"number": 1, "sha256": sha(b"v1")}
    assert lookup(http, "plans", "final/plan.docx")["id"] == first["document_id"]
    lookup(http, "plans", "drafts/plan.docx", expect=404)
    [event] = trail.new()
    assert event["action"] == "document.moved"
    assert event["subject"]["document"] == first["document_id"]
    assert (event["details"]["from"], event["details"]["to"]) == (
        "drafts/plan.docx", "final/plan.docx")

    # A rename with new bytes moves the document and records the next version.
    edited = agent.save("archive/plan.docx", b"v2", kind="renamed", from_path="final/plan.docx")
    assert (edited["outcome"], edited["document_id"]) == ("recorded", first["document_id"])
    assert edited["version"]["number"] == 2
    assert trail.new_actions() == ["document.moved", "version.recorded"]
    history = call(http, "GET", f"/documents/{first['document_id']}/history")
    assert history["document"]["path"] == "archive/plan.docx"
    assert [v["sha256"] for v in history["versions"]] == [sha(b"v1"), sha(b"v2")]
    assert [e["action"] for e in history["events"]] == [
        "document.created", "version.recorded", "document.moved", "document.moved",
        "version.recorded",
    ]
    for event in history["events"]:
        check_event(event)


def test_long_paths_are_moved_and_deleted_like_any_other(http, agent, trail):
    long = "/".join(["x" * 200] * 3)  # 600 characters in names within the 255-byte limit
    old, new = f"drafts/{long}.docx", f"final/{long}.docx"
    saved = agent.save(old, b"v1")
    moved = agent.save(new, b"v1", kind="renamed", from_path=old)
    assert (moved["outcome"], moved["document_id"]) == ("moved", saved["document_id"])
    deleted = agent.report(agent.entry(new, None, kind="deleted"))["results"][0]
    assert deleted["outcome"] == "deleted"
    ignored = agent.report(agent.entry("gone/" + long, None, kind="deleted"))["results"][0]
    assert ignored["outcome"] == "ignored"
    fresh = agent.save("z/" + long, b"v1", kind="renamed", from_path="q/" + long)
    assert fresh["outcome"] == "recorded"


def test_a_rename_over_an_existing_document_marks_that_one_deleted(http, agent, trail):
    moving = agent.save("a.txt", b"aaa")
    replaced = agent.save("b.txt", b"bbb")
    trail.new()
    result = agent.save("b.txt", b"aaa", kind="renamed", from_path="a.txt")
    assert (result["outcome"], result["document_id"]) == ("moved", moving["document_id"])
    assert lookup(http, "plans", "b.txt")["id"] == moving["document_id"]
    gone = status(http, replaced["document_id"])
    assert (gone["deleted"], gone["path"]) == (True, "b.txt")
    assert [v["sha256"] for v in versions(http, replaced["document_id"])] == [sha(b"bbb")]
    deleted, moved = trail.new()
    assert (deleted["action"], deleted["subject"]["document"]) == (
        "document.deleted", replaced["document_id"])
    assert "renamed over it" in deleted["details"]["reason"]
    assert (moved["action"], moved["subject"]["document"]) == (
        "document.moved", moving["document_id"])


def test_a_rename_from_an_unrecorded_path_records_the_new_path(http, agent, trail):
    result = agent.save("new.txt", b"x", kind="renamed", from_path="never-seen.txt")
    assert (result["outcome"], result["version"]["number"]) == ("recorded", 1)
    assert "never-seen.txt" in result["message"]
    assert lookup(http, "plans", "new.txt")["id"] == result["document_id"]
    assert trail.new_actions() == ["document.created", "version.recorded"]


def test_a_deletion_marks_the_document_deleted_and_keeps_its_versions(http, agent, trail):
    agent.save("plan.docx", b"version one", kind="created")
    saved = agent.save("plan.docx", b"version two")
    trail.new()
    result = agent.report(agent.entry("plan.docx", None, kind="deleted"))["results"][0]
    assert (result["outcome"], result["document_id"]) == ("deleted", saved["document_id"])
    document = status(http, saved["document_id"])
    assert (document["deleted"], document["awaiting"]) == (True, [])
    assert document["latest"] == {"number": 2, "sha256": sha(b"version two")}
    assert lookup(http, "plans", "plan.docx")["deleted"] is True
    [event] = trail.new()
    assert (event["action"], event["details"]["path"]) == ("document.deleted", "plan.docx")
    assert [v["sha256"] for v in versions(http, saved["document_id"])] == [
        sha(b"version one"), sha(b"version two")]
    # Deleting what is not there changes nothing.
    again = agent.report(agent.entry("plan.docx", None, kind="deleted"))["results"][0]
    assert (again["outcome"], again["document_id"]) == ("ignored", None)
    assert trail.new() == []


def test_every_version_stays_downloadable_after_deletion(http, agent):
    agent.save("plan.docx", b"version one", kind="created")
    saved = agent.save("plan.docx", b"version two")
    agent.report(agent.entry("plan.docx", None, kind="deleted"))
    for number, data in ((1, b"version one"), (2, b"version two")):
        response = http.get(f"{API}/documents/{saved['document_id']}/versions/{number}/content",
                            headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 200, response.text
        assert response.content == data
        assert response.headers["X-Officium-SHA256"] == sha(data)
    missing = http.get(f"{API}/documents/{saved['document_id']}/versions/3/content",
                       headers=bearer(ADMIN_TOKEN))
    assert missing.status_code == 404
    assert "versions 1 to 2" in missing.json()["detail"]


def test_a_file_created_again_at_a_deleted_path_takes_up_its_history(http, agent, trail):
    first = agent.save("plan.docx", b"old", kind="created")
    agent.report(agent.entry("plan.docx", None, kind="deleted"))
    trail.new()
    again = agent.save("plan.docx", b"new", kind="created")
    assert (again["outcome"], again["document_id"]) == ("recorded", first["document_id"])
    assert again["version"] == {"number": 2, "sha256": sha(b"new")}
    document = lookup(http, "plans", "plan.docx")
    assert (document["id"], document["deleted"]) == (first["document_id"], False)
    assert [v["sha256"] for v in versions(http, document["id"])] == [sha(b"old"), sha(b"new")]
    assert trail.new_actions() == ["document.reappeared", "version.recorded"]


def test_a_deleted_file_restored_with_its_last_bytes_is_live_again(http, agent, trail):
    first = agent.save("plan.docx", b"same", kind="created")
    agent.report(agent.entry("plan.docx", None, kind="deleted"))
    trail.new()
    again = agent.save("plan.docx", b"same", kind="created")
    document = lookup(http, "plans", "plan.docx")
    assert document["deleted"] is False
    assert document["id"] == again["document_id"] == first["document_id"]
    assert [v["number"] for v in versions(http, document["id"])] == [1]
    assert trail.new_actions() == ["document.reappeared"]


def test_content_uploads_are_idempotent(http, agent, trail):
    data = b"\x00binary\xffcontent"
    first = agent.upload(data)
    assert first.status_code == 201
    assert first.json() == {"sha256": sha(data), "size": len(data), "created": True}
    second = agent.upload(data)
    assert second.status_code == 200
    assert second.json()["created"] is False
    head = http.head(f"{API}/content/{sha(data)}", headers=bearer(ADMIN_TOKEN))
    assert (head.status_code, head.headers["X-Officium-Size"]) == (200, str(len(data)))
    missing = http.head(f"{API}/content/{sha(b'nothing')}", headers=bearer(ADMIN_TOKEN))
    assert missing.status_code == 404
    assert trail.new() == []  # the content store is not the register


# ------------------------------------------------------------------ queries


@pytest.fixture
def spread(http, agent):
    """Six documents in two folders, one of them deleted; returns ids by (folder, path)."""
    archive = folder_agent(http, "archive", default_owner=None)
    ids = {}
    for path in ("a%b/x.txt", "aXb/y.txt", "a_c/z.txt", "abc/w.txt", "other/v.txt"):
        ids["plans", path] = agent.save(path, path.encode())["document_id"]
    ids["archive", "a%b/q.txt"] = archive.save("a%b/q.txt", b"q")["document_id"]
    agent.report(agent.entry("other/v.txt", None, kind="deleted"))
    return ids


def listed(http, **params) -> list[tuple[str, str]]:
    page = call(http, "GET", "/documents", params=params)
    assert page["next"] is None
    return [(d["folder"], d["path"]) for d in page["documents"]]


ALL_PLANS = ["a%b/x.txt", "aXb/y.txt", "a_c/z.txt", "abc/w.txt", "other/v.txt"]

FILTERS = [
    ({}, [*ALL_PLANS, "a%b/q.txt"]),
    ({"folder": "plans"}, ALL_PLANS),
    ({"folder": "archive"}, ["a%b/q.txt"]),
    ({"prefix": "a%"}, ["a%b/x.txt", "a%b/q.txt"]),  # '%' is a character, not a wildcard
    ({"prefix": "a_"}, ["a_c/z.txt"]),  # so is '_'
    ({"prefix": "a%", "folder": "plans"}, ["a%b/x.txt"]),
    ({"prefix": "a"}, ["a%b/x.txt", "aXb/y.txt", "a_c/z.txt", "abc/w.txt", "a%b/q.txt"]),
    ({"prefix": "aX"}, ["aXb/y.txt"]),
    ({"prefix": "other/"}, ["other/v.txt"]),
    ({"prefix": "zzz"}, []),
    ({"owner": "Planning"}, ALL_PLANS),
    ({"owner": "Administration"}, []),
    ({"state": "draft"}, [*ALL_PLANS, "a%b/q.txt"]),
    ({"state": "approved"}, []),
    ({"deleted": "true"}, ["other/v.txt"]),
    ({"deleted": "false", "folder": "plans"}, ["a%b/x.txt", "aXb/y.txt", "a_c/z.txt", "abc/w.txt"]),
    ({"deleted": "false", "prefix": "other"}, []),
    ({"owner": "Planning", "prefix": "a", "deleted": "false"},
     ["a%b/x.txt", "aXb/y.txt", "a_c/z.txt", "abc/w.txt"]),
]


def test_documents_are_listed_by_filters(http, spread):
    found = {json.dumps(params): [path for _, path in listed(http, **params)]
             for params, _ in FILTERS}
    assert found == {json.dumps(params): expected for params, expected in FILTERS}


def test_a_path_prefix_is_case_sensitive(http, spread):
    assert listed(http, prefix="A") == []
    assert listed(http, prefix="ax") == []
    assert [path for _, path in listed(http, prefix="aX")] == ["aXb/y.txt"]


@pytest.mark.parametrize("params", [{"folder": "nowhere"}, {"owner": "Nobody"}])
def test_filtering_by_an_unknown_folder_or_office_is_refused(http, spread, params):
    response = http.get(f"{API}/documents", params=params, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 404
    assert "there is no" in response.json()["detail"]


def test_documents_are_paged_through_next(http, spread):
    for limit in (1, 2, 3, 4, 6, 7):
        seen, after, pages = [], 0, 0
        while True:
            page = call(http, "GET", "/documents", params={"after": after, "limit": limit})
            pages += 1
            assert len(page["documents"]) <= limit
            seen += [d["id"] for d in page["documents"]]
            if page["next"] is None:
                break
            assert page["next"] == page["documents"][-1]["id"]
            after = page["next"]
        assert seen == sorted(spread.values()), limit
        assert pages == -(-len(spread) // limit), limit  # no empty page at the end


def test_a_document_is_found_by_folder_and_path(http, agent):
    saved = agent.save("reports/2024/q1.xlsx", b"q1")
    for spelling in ("reports/2024/q1.xlsx", "./reports//2024/q1.xlsx", "reports/2024/q1.xlsx/"):
        assert lookup(http, "plans", spelling)["id"] == saved["document_id"]
    missing = lookup(http, "plans", "reports/2024/q2.xlsx", expect=404)
    assert "reports/2024/q2.xlsx" in missing["detail"]
    unknown = lookup(http, "nowhere", "reports/2024/q1.xlsx", expect=404)
    assert "nowhere" in unknown["detail"]
    call(http, "GET", "/documents/999999", expect=404)


def test_verify_finds_every_version_with_those_bytes(http, agent):
    x, y = b"the signed plan", b"an edit"
    one = agent.save("one.txt", x)["document_id"]
    agent.save("one.txt", y)
    two = agent.save("two.txt", x)["document_id"]
    three = agent.save("three.txt", x)["document_id"]
    agent.save("three.txt", y)
    agent.save("three.txt", x)
    agent.report(agent.entry("two.txt", None, kind="deleted"))

    def matches(data: bytes, spelling=str) -> set[tuple]:
        result = call(http, "GET", f"/verify/{spelling(sha(data))}")
        assert result["sha256"] == sha(data)
        return {
            (m["document_id"], m["path"], m["number"], m["is_latest"], m["is_final"],
             m["superseded_by"], m["deleted"])
            for m in result["matches"]
        }

    assert matches(x) == {
        (one, "one.txt", 1, False, False, 2, False),
        (two, "two.txt", 1, True, False, None, True),
        (three, "three.txt", 1, False, False, 2, False),
        (three, "three.txt", 3, True, False, None, False),
    }
    assert matches(y, str.upper) == {
        (one, "one.txt", 2, True, False, None, False),
        (three, "three.txt", 2, False, False, 3, False),
    }
    assert matches(b"never recorded") == set()


# ---------------------------------------------------------------- ownership


@pytest.fixture
def staff(http, office_and_folder):
    """Offices Legal and Archive beside Planning, and tokens for people in them."""
    office(http, "Legal")
    office(http, "Archive")
    return {
        "carol": person_token(http, "carol", ("Planning", "approver"), name="Carol Approver"),
        "dave": person_token(http, "dave", ("Planning", "member")),
        "erin": person_token(http, "erin", ("Legal", "approver")),
        "frank": person_token(http, "frank", ("Planning", "auditor")),
    }


def hand_over(http, document_id: int, office_name: str, *, token: str, expect: int = 200,
              reason: str | None = None):
    return call(http, "POST", f"/documents/{document_id}/owner", token=token, expect=expect,
                json={"office": office_name, "reason": reason})


def test_ownership_is_handed_over_by_an_approver_of_the_owner_or_an_admin(
    http, agent, staff, trail
):
    document = agent.save("plan.docx", b"v1")["document_id"]
    trail.new()
    result = hand_over(http, document, "Legal", token=staff["carol"], reason="Legal drafts it now")
    assert result["owner_office"] == "Legal"
    assert status(http, document)["owner_office"] == "Legal"
    [event] = trail.new()
    assert event["action"] == "document.owner_changed"
    assert event["subject"]["document"] == document
    assert event["details"] == {
        "from": "Planning", "to": "Legal", "reason": "Legal drafts it now", "open_review": None}
    assert (event["actor"]["name"], event["actor"]["office"], event["actor"]["role"]) == (
        "Carol Approver", "Planning", "approver")

    # Carol approves for Planning only; Erin approves for Legal, the new owner.
    refused = hand_over(http, document, "Planning", token=staff["carol"], expect=403)
    assert "approver" in refused["detail"] and "'carol'" in refused["detail"]
    hand_over(http, document, "Archive", token=staff["erin"])
    hand_over(http, document, "Planning", token=ADMIN_TOKEN, reason=None)
    events = trail.new()
    assert [(e["details"]["from"], e["details"]["to"]) for e in events] == [
        ("Legal", "Archive"), ("Archive", "Planning")]
    assert [(e["actor"]["office"], e["actor"]["role"]) for e in events] == [
        ("Legal", "approver"), ("Administration", "admin")]
    assert events[1]["details"]["reason"] is None
    assert status(http, document)["owner_office"] == "Planning"


def test_others_cannot_hand_ownership_over(http, agent, staff, trail):
    document = agent.save("plan.docx", b"v1")["document_id"]
    trail.new()
    # A member and an auditor of the owner office, an approver of another office, the agent.
    for who in ("dave", "frank", "erin"):
        refused = hand_over(http, document, "Legal", token=staff[who], expect=403)
        assert f"'{who}'" in refused["detail"]
        assert "Planning" in refused["detail"]
    refused = hand_over(http, document, "Legal", token=agent.token, expect=403)
    assert "agent" in refused["detail"]
    assert status(http, document)["owner_office"] == "Planning"
    assert trail.new() == []


def test_ownership_changes_that_make_no_sense_are_refused(http, agent, staff, trail):
    document = agent.save("plan.docx", b"v1")["document_id"]
    trail.new()
    assert "already owned" in hand_over(http, document, "Planning", token=ADMIN_TOKEN,
                                        expect=409)["detail"]
    assert "Nobody" in hand_over(http, document, "Nobody", token=ADMIN_TOKEN, expect=404)["detail"]
    hand_over(http, 424242, "Legal", token=ADMIN_TOKEN, expect=404)
    assert trail.new() == []


def test_a_document_without_an_owner_awaits_the_admins(http, staff, trail):
    inbox = folder_agent(http, "inbox", default_owner=None)
    result = inbox.save("scan.pdf", b"%PDF")
    document = status(http, result["document_id"])
    assert document["owner_office"] is None
    assert [(a["party"], a["action"], a["due"]) for a in document["awaiting"]] == [
        ("role:admin", "assign an owner", None)]
    assert document["awaiting"][0]["since"] is not None
    trail.new()
    # No owner office means no approver of it: only an admin may assign one.
    hand_over(http, result["document_id"], "Legal", token=staff["erin"], expect=403)
    assigned = hand_over(http, result["document_id"], "Legal", token=ADMIN_TOKEN,
                         reason="scans go to Legal")
    assert (assigned["owner_office"], assigned["awaiting"]) == ("Legal", [])
    [event] = trail.new()
    assert event["details"] == {
        "from": None, "to": "Legal", "reason": "scans go to Legal", "open_review": None}


# --------------------------------------------------------------------- audit


def test_audit_events_are_paged_by_seq(http, staff, trail):
    for n in range(7):
        office(http, f"Office {n}")
    everything = trail.events()
    total = len(everything)
    assert [e["seq"] for e in everything] == list(range(1, total + 1))
    for limit in (1, 3, 5, total):
        seqs, after = [], 0
        while True:
            page = call(http, "GET", "/audit/events", token=staff["frank"],
                        params={"after": after, "limit": limit})
            assert len(page["events"]) <= limit
            assert all(e["seq"] > after for e in page["events"])
            seqs += [e["seq"] for e in page["events"]]
            if page["next"] is None:
                break
            assert page["next"] == page["events"][-1]["seq"]
            after = page["next"]
        assert seqs == list(range(1, total + 1))
    tail = call(http, "GET", "/audit/events", params={"after": total - 2})
    assert [e["seq"] for e in tail["events"]] == [total - 1, total]
    assert tail["next"] is None
    assert call(http, "GET", "/audit/events", params={"after": total}) == {
        "events": [], "next": None}


def test_audit_events_after_any_accepted_seq_is_an_empty_page(http):
    for after in (2**31 - 1, 2**31, 2**62):
        assert call(http, "GET", "/audit/events", params={"after": after}) == {
            "events": [], "next": None}


def test_the_server_recomputes_the_chain(http, agent, staff, trail):
    agent.save("plan.docx", b"v1")
    events = trail.events()
    check = call(http, "GET", "/audit/verify", token=staff["frank"])
    assert check == {
        "ok": True,
        "checked": len(events),
        "head_seq": len(events),
        "head_hash": events[-1]["hash"],
        "first_broken_seq": None,
        "reason": None,
    }


def test_the_server_reports_the_first_rewritten_event(http, agent, app, trail):
    agent.save("plan.docx", b"v1")
    agent.save("plan.docx", b"v2")
    recorded = [e for e in trail.events() if e["action"] == "version.recorded"]
    target = recorded[0]["seq"]
    with app.state.db.engine.begin() as connection:
        row = connection.execute(
            sa.select(AuditEvent.canonical).where(AuditEvent.seq == target)
        ).one()
        forged = bytes(row[0]).replace(sha(b"v1").encode(), sha(b"v9").encode())
        assert forged != bytes(row[0])
        lift_append_only_guards(connection)
        connection.execute(
            sa.update(AuditEvent).where(AuditEvent.seq == target).values(canonical=forged)
        )
    check = call(http, "GET", "/audit/verify")
    assert (check["ok"], check["first_broken_seq"], check["checked"]) == (
        False, target, target - 1)
    assert "hash" in check["reason"]


def test_the_server_notices_events_missing_from_the_tail(http, agent, app):
    agent.save("plan.docx", b"v1")
    head = call(http, "GET", "/audit/verify")["head_seq"]
    with app.state.db.engine.begin() as connection:
        lift_append_only_guards(connection)
        connection.execute(sa.delete(AuditEvent).where(AuditEvent.seq == head))
    check = call(http, "GET", "/audit/verify")
    assert (check["ok"], check["first_broken_seq"]) == (False, head)
    assert "missing" in check["reason"]


def test_every_state_change_is_an_event_of_one_verifiable_chain(http, agent, staff, trail):
    """A tour of every kind of change; the whole trail then verifies offline."""
    saved = agent.save("a.txt", b"1", kind="created")
    agent.save("a.txt", b"2")
    agent.save("b.txt", b"3", kind="renamed", from_path="a.txt")
    agent.save("c.txt", b"4")
    agent.save("c.txt", b"4", kind="renamed", from_path="b.txt")
    agent.report(agent.entry("c.txt", None, kind="deleted"))
    agent.save("c.txt", b"5")
    hand_over(http, saved["document_id"], "Legal", token=ADMIN_TOKEN, reason="tour")
    token = call(http, "POST", "/tokens", json={"username": "dave"}, expect=201)
    call(http, "DELETE", f"/tokens/{token['id']}")

    events = trail.events()
    for event in events:
        check_event(event)
    assert {e["action"] for e in events} == {
        "register.bootstrapped", "key.registered", "office.created", "folder.created",
        "token.created",
        "person.created", "membership.granted", "document.created", "version.recorded",
        "document.moved", "document.deleted", "document.reappeared", "document.owner_changed",
        "token.revoked",
    }
    report = verify_chain((e["seq"], e["canonical"].encode(), e["hash"]) for e in events)
    assert report.ok
    assert (report.checked, report.head_hash) == (len(events), events[-1]["hash"])
    times = [e["time"] for e in events]
    assert times == sorted(times)
    assert all(t.endswith("Z") for t in times)
