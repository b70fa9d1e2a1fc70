"""The SDK and the ``officium`` command line, driven against the real app in-process."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from clients.cli import main as cli_main
from clients.cli.main import add_plugin_commands, build_app
from clients.cli.names import Place, locate
from clients.sdk import ContentMismatch, OfficiumClient, UnexpectedResponse, sha256_file
from core.errors import Forbidden, Invalid, NotFound, OfficiumError, Unauthenticated, Unavailable
from core.schemas import (
    AuditEventPage,
    Folder,
    ReportKind,
    ReportOutcome,
    Role,
    VersionReport,
)

# The keys DESIGN §4 promises for `status --json` (and for each document of `list --json`).
STATUS_KEYS = frozenset(
    ("id", "folder", "path", "owner_office", "state", "deleted", "latest", "final", "awaiting")
)


def _commit(n: int) -> str:
    return hashlib.sha1(f"commit {n}".encode()).hexdigest()


class Share:
    """A watched folder on disk whose agent records saves through the SDK."""

    def __init__(self, admin: OfficiumClient, client_for, root: Path, name: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.name = name
        admin.create_folder(name=name, root=str(root), default_owner="Planning")
        self.agent: OfficiumClient = client_for(admin.create_token(folder=name).token)
        self._commits = itertools.count(1)

    def save(self, path: str, data: bytes):
        """Write a file under the root, upload it from disk and report it."""
        file = self.root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        digest = sha256_file(file)
        self.agent.upload_content(digest, file)
        report = self._report(path, ReportKind.modified, sha256=digest, size=len(data))
        return self.agent.report(self.name, [report]).results[0]

    def delete(self, path: str):
        """Remove a file and report its deletion."""
        (self.root / path).unlink()
        report = self._report(path, ReportKind.deleted)
        return self.agent.report(self.name, [report]).results[0]

    def _report(self, path: str, kind: ReportKind, **content) -> VersionReport:
        return VersionReport(
            path=path,
            kind=kind,
            commit=_commit(next(self._commits)),
            observed_at=datetime.now(UTC),
            **content,
        )


@pytest.fixture
def share(admin, client_for, tmp_path) -> Share:
    """Office 'Planning' and folder 'share' (rooted in a real directory) that it owns."""
    admin.create_office(name="Planning")
    return Share(admin, client_for, tmp_path / "share", "share")


@pytest.fixture
def officium(http, admin_token):
    """Run ``officium ARGS...`` against the in-process app; return the click Result."""
    runner = CliRunner()
    app = build_app()

    def run(*args: str, token: str | None = admin_token, env: dict | None = None):
        token_args = ["--token", token] if token is not None else []
        return runner.invoke(
            app,
            [*args, *token_args],
            obj={"http_client": http},
            env={"COLUMNS": "160", "OFFICIUM_TOKEN": None, **(env or {})},
        )

    return run


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------------ SDK


def test_sdk_directory_round_trip(admin, client_for):
    office = admin.create_office(name="Finance")
    sub = admin.create_office(name="Budget", parent="Finance")
    person = admin.create_person(username="alice", name="Alice Archer")
    membership = admin.create_membership(username="alice", office="Budget", role=Role.approver)
    token = admin.create_token(username="alice", label="laptop")

    assert (sub.parent, person.name, membership.role) == ("Finance", "Alice Archer", Role.approver)
    assert {o.name for o in admin.list_offices()} >= {office.name, sub.name}
    assert "alice" in {p.username for p in admin.list_persons()}
    assert [m.office for m in admin.list_memberships(username="alice")] == ["Budget"]
    me = client_for(token.token).me()
    assert (me.kind, me.username, [m.role for m in me.memberships]) == (
        "person",
        "alice",
        [Role.approver],
    )
    assert admin.revoke_token(token.id).revoked_at is not None
    with pytest.raises(Unauthenticated):
        client_for(token.token).me()


def test_sdk_rebuilds_typed_errors_from_problems(admin, client_for):
    admin.create_person(username="bob")
    bob = client_for(admin.create_token(username="bob").token)

    with pytest.raises(NotFound):
        admin.document(424242)
    with pytest.raises(Unauthenticated):
        client_for("off_not-a-token").me()
    with pytest.raises(Forbidden):
        bob.create_office(name="Shadow cabinet")
    with pytest.raises(Invalid, match=r"\.\."):
        admin.lookup("share", "../etc/passwd")


def test_sdk_refuses_a_malformed_request_before_sending_it(admin):
    with pytest.raises(Invalid, match="exactly one of"):
        admin.create_token()
    with pytest.raises(Invalid, match="username"):
        admin.create_person(username="Not A Username")


def _mock_client(handler) -> OfficiumClient:
    http = httpx.Client(base_url="http://officium.invalid", transport=httpx.MockTransport(handler))
    return OfficiumClient("http://officium.invalid", "t", http_client=http)


def test_sdk_reports_an_unreachable_server_as_unavailable():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(Unavailable, match="cannot reach the Officium server at http://officium"):
        _mock_client(refuse).me()


def test_sdk_reports_a_response_that_is_not_a_problem():
    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html><body>Bad gateway from the proxy</body></html>")

    with pytest.raises(UnexpectedResponse, match=r"502.*Bad gateway from the proxy") as caught:
        _mock_client(gateway).me()
    assert caught.value.status == 502


def test_sdk_keeps_an_unknown_problem_kind_as_a_plain_officium_error():
    def odd(request: httpx.Request) -> httpx.Response:
        body = {
            "type": "urn:officium:problem:brand-new",
            "title": "New",
            "status": 418,
            "detail": "a kind this client does not know",
        }
        return httpx.Response(418, json=body, headers={"content-type": "application/problem+json"})

    with pytest.raises(OfficiumError, match="does not know") as caught:
        _mock_client(odd).me()
    assert type(caught.value) is OfficiumError


def test_sdk_uploads_reports_and_downloads_exact_bytes(share, admin, tmp_path):
    first = share.save("plans/plan.odt", b"first draft")
    second = share.save("plans/plan.odt", b"second draft")
    assert (first.outcome, second.outcome) == (ReportOutcome.recorded, ReportOutcome.recorded)
    stored = share.agent.upload_content(hashlib.sha256(b"raw").hexdigest(), b"raw")
    assert stored.size == 3
    assert share.agent.has_content(hashlib.sha256(b"raw").hexdigest())
    assert not share.agent.has_content(hashlib.sha256(b"never sent").hexdigest())

    versions = admin.versions(second.document_id)
    assert [(v.number, v.size) for v in versions] == [(1, 11), (2, 12)]
    target = tmp_path / "out" / "copy.odt"
    target.parent.mkdir()
    digest = admin.download(second.document_id, 1, target)
    assert target.read_bytes() == b"first draft"
    assert digest == hashlib.sha256(b"first draft").hexdigest()
    assert list(target.parent.iterdir()) == [target]


def test_sdk_download_refuses_bytes_that_do_not_match_their_hash(tmp_path):
    def lying(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"tampered", headers={"X-Officium-SHA256": "0" * 64})

    target = tmp_path / "copy.odt"
    with pytest.raises(ContentMismatch):
        _mock_client(lying).download(1, 1, target)
    assert list(tmp_path.iterdir()) == []


def test_sdk_iterates_documents_and_events_across_pages(share, admin):
    for n in range(5):
        share.save(f"notes/n{n}.txt", f"note {n}".encode())
    listed = [d.path for d in admin.iter_documents(folder="share", page_size=2)]
    assert listed == [f"notes/n{n}.txt" for n in range(5)]
    first = admin.audit_events(limit=2)
    assert len(first.events) == 2 and first.next == first.events[-1].seq
    every = list(admin.iter_audit_events(page_size=3))
    assert [e.seq for e in every] == list(range(1, len(every) + 1))
    assert every[-1].seq == admin.audit_verify().head_seq


# ------------------------------------------------------------------- admin CLI


def test_cli_admin_offices_persons_members(officium):
    assert officium("admin", "office", "add", "Finance").exit_code == 0
    added = _json(officium("admin", "office", "add", "Budget", "--parent", "Finance", "--json"))
    assert (added["name"], added["parent"]) == ("Budget", "Finance")
    listed = _json(officium("admin", "office", "list", "--json"))
    assert {"Finance", "Budget"} <= {o["name"] for o in listed["offices"]}
    assert "Budget" in officium("admin", "office", "list").stdout

    person = _json(officium("admin", "person", "add", "carol", "--name", "Carol C", "--json"))
    assert person["name"] == "Carol C"
    assert "Carol C" in officium("admin", "person", "list").stdout
    assert "carol" in {
        p["username"] for p in _json(officium("admin", "person", "list", "--json"))["persons"]
    }

    result = officium("admin", "member", "add", "carol", "Budget", "--role", "auditor")
    assert result.exit_code == 0 and "auditor" in result.stdout
    members = _json(officium("admin", "member", "list", "--office", "Budget", "--json"))
    assert [(m["username"], m["role"]) for m in members["memberships"]] == [("carol", "auditor")]


def test_cli_admin_token_is_printed_once_and_works(officium, admin, client_for):
    admin.create_person(username="dora")
    created = officium("admin", "token", "create", "dora", "--label", "desk")
    assert created.exit_code == 0
    secret = created.stdout.strip()
    assert "shown only this once" in created.stderr
    assert client_for(secret).me().username == "dora"

    as_json = _json(officium("admin", "token", "create", "dora", "--json"))
    assert as_json["token"] and as_json["username"] == "dora"
    tokens = _json(officium("admin", "token", "list", "--json"))["tokens"]
    assert secret not in json.dumps(tokens)
    assert "desk" in officium("admin", "token", "list").stdout

    revoked = _json(officium("admin", "token", "revoke", str(as_json["id"]), "--json"))
    assert revoked["revoked_at"] is not None
    with pytest.raises(Unauthenticated):
        client_for(as_json["token"]).me()


def test_cli_admin_folders_store_absolute_roots(officium, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert officium("admin", "office", "add", "Records").exit_code == 0
    folder = _json(
        officium(
            "admin", "folder", "add", "archive", "--root", "archive", "--owner", "Records", "--json"
        )
    )
    assert folder["root"] == str(tmp_path / "archive")
    assert folder["default_owner"] == "Records"
    listed = officium("admin", "folder", "list")
    assert "archive" in listed.stdout and str(tmp_path / "archive") in listed.stdout


def test_cli_admin_needs_an_admin(officium, admin):
    admin.create_person(username="erin")
    token = admin.create_token(username="erin").token
    result = officium("admin", "office", "add", "Coup", token=token)
    assert result.exit_code == 1
    assert result.stderr.startswith("officium: ")
    assert "Coup" not in {o.name for o in admin.list_offices()}


def test_cli_without_a_token_says_how_to_give_one(officium):
    result = officium("status", "1", token=None)
    assert result.exit_code == 1
    assert "OFFICIUM_TOKEN" in result.stderr


def test_cli_reads_the_token_from_the_environment(officium, admin_token):
    result = officium(
        "admin", "office", "list", "--json", token=None, env={"OFFICIUM_TOKEN": admin_token}
    )
    assert "Administration" in {o["name"] for o in _json(result)["offices"]}


# ---------------------------------------------------------------- documents CLI


def test_cli_status_names_a_document_three_ways(share, officium, monkeypatch):
    share.save("reports/q1.txt", b"one")
    recorded = share.save("reports/q1.txt", b"two")
    by_id = _json(officium("status", str(recorded.document_id), "--json"))
    by_name = _json(officium("status", "share:reports/q1.txt", "--json"))
    by_path = _json(officium("status", str(share.root / "reports" / "q1.txt"), "--json"))
    monkeypatch.chdir(share.root / "reports")
    by_relative_path = _json(officium("status", "q1.txt", "--json"))

    assert by_id == by_name == by_path == by_relative_path
    assert by_id.keys() >= STATUS_KEYS
    assert (by_id["folder"], by_id["path"], by_id["owner_office"]) == (
        "share",
        "reports/q1.txt",
        "Planning",
    )
    assert by_id["state"] == "draft" and by_id["deleted"] is False
    assert by_id["latest"] == {"number": 2, "sha256": hashlib.sha256(b"two").hexdigest()}
    assert by_id["final"] is None and by_id["awaiting"] == []


def test_cli_status_rich_shows_owner_state_and_latest_version(share, officium):
    share.save("memo [draft].txt", b"memo")
    shown = officium("status", "share:memo [draft].txt")
    assert shown.exit_code == 0, shown.output
    for fact in (
        "share:memo [draft].txt",
        "Planning",
        "draft",
        "v1",
        hashlib.sha256(b"memo").hexdigest()[:12],
    ):
        assert fact in shown.stdout


@pytest.mark.parametrize("command", ["status", "history"])
def test_cli_unrecorded_document_exits_1_and_says_so(share, officium, command):
    share.save("real.txt", b"real")
    for name in ("share:missing.txt", str(share.root / "missing.txt"), "99999"):
        result = officium(command, name)
        assert result.exit_code == 1
        assert result.stdout == ""
        assert f"officium: {name} is not a recorded document" in result.stderr


def test_cli_path_outside_every_folder_is_refused(share, officium, tmp_path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    result = officium("status", str(outside))
    assert result.exit_code == 1
    assert "not inside any registered folder" in result.stderr


def test_local_paths_map_to_the_innermost_folder_root(tmp_path):
    (tmp_path / "outer" / "inner").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "outer" / "inner")
    folders = [
        Folder(id=1, name="outer", root=str(tmp_path / "outer"), default_owner=None),
        Folder(id=2, name="inner", root=str(tmp_path / "outer" / "inner"), default_owner=None),
    ]
    for local, place in [
        (tmp_path / "outer" / "inner" / "a.txt", Place("inner", "a.txt")),
        (tmp_path / "outer" / "b" / "c.txt", Place("outer", "b/c.txt")),
        (tmp_path / "alias" / "d" / "e.txt", Place("inner", "d/e.txt")),
        (tmp_path / "outer", Place("outer", "")),
    ]:
        assert locate(folders, str(local)) == place
    with pytest.raises(Invalid, match="not inside any registered folder"):
        locate(folders, str(tmp_path / "outerwear" / "f.txt"))


def test_cli_list_follows_every_page(share, officium):
    digest = hashlib.sha256(b"same").hexdigest()
    share.agent.upload_content(digest, b"same")
    reports = [
        VersionReport(
            path=f"bulk/{n:03}.txt",
            kind=ReportKind.created,
            sha256=digest,
            size=4,
            commit=_commit(1),
            observed_at=datetime.now(UTC),
        )
        for n in range(130)
    ]
    share.agent.report("share", reports)
    listed = _json(officium("list", "--json"))["documents"]
    assert [d["path"] for d in listed] == [f"bulk/{n:03}.txt" for n in range(130)]
    assert all(d.keys() >= STATUS_KEYS for d in listed)


def test_cli_list_by_folder_prefix_and_local_directory(share, officium, monkeypatch):
    share.save("a/one.txt", b"1")
    share.save("a/two.txt", b"2")
    share.save("ab/three.txt", b"3")
    share.save("b/four.txt", b"4")

    def paths(*args: str) -> list[str]:
        return [d["path"] for d in _json(officium("list", *args, "--json"))["documents"]]

    assert len(paths("share")) == 4
    assert paths("share:a") == ["a/one.txt", "a/two.txt", "ab/three.txt"]
    assert paths(str(share.root / "a")) == ["a/one.txt", "a/two.txt"]
    monkeypatch.chdir(share.root)
    assert paths("b") == ["b/four.txt"]
    table = officium("list", "share:a")
    assert table.exit_code == 0
    assert "share:a/one.txt" in table.stdout and "Planning" in table.stdout


def test_cli_list_filters_by_state_owner_and_deletion(share, officium, admin):
    kept = share.save("kept.txt", b"kept")
    share.save("gone.txt", b"gone")
    share.delete("gone.txt")
    admin.create_office(name="Legal")
    admin.change_owner(kept.document_id, "Legal")

    def paths(*args: str) -> list[str]:
        return [d["path"] for d in _json(officium("list", *args, "--json"))["documents"]]

    assert paths("--deleted") == ["gone.txt"]
    assert paths("--no-deleted") == ["kept.txt"]
    assert paths("--owner", "Legal") == ["kept.txt"]
    assert sorted(paths("--state", "draft")) == ["gone.txt", "kept.txt"]
    assert paths("--state", "approved") == []
    unknown = officium("list", "nosuchfolder")
    assert unknown.exit_code == 1 and "nosuchfolder" in unknown.stderr


def test_cli_history_lists_versions_and_events(share, officium):
    share.save("plan.txt", b"v1")
    share.save("plan.txt", b"v2 longer")
    record = _json(officium("history", "share:plan.txt", "--json"))
    assert [(v["number"], v["sha256"], v["size"], v["author"]) for v in record["versions"]] == [
        (1, hashlib.sha256(b"v1").hexdigest(), 2, "unknown"),
        (2, hashlib.sha256(b"v2 longer").hexdigest(), 9, "unknown"),
    ]
    assert all(v["recorded_at"] for v in record["versions"])
    assert len(record["events"]) >= 2
    assert record["document"]["path"] == "plan.txt"

    shown = officium("history", "share:plan.txt")
    assert shown.exit_code == 0
    assert hashlib.sha256(b"v2 longer").hexdigest()[:12] in shown.stdout
    assert "version" in shown.stdout


def test_cli_verify_tells_which_version_a_copy_is(share, officium, tmp_path):
    first = share.save("budget.txt", b"budget v1")
    share.save("budget.txt", b"budget v2")
    copy = tmp_path / "attachment.txt"
    copy.write_bytes(b"budget v1")

    result = _json(officium("verify", str(copy), "--json"))
    assert result["sha256"] == hashlib.sha256(b"budget v1").hexdigest()
    [match] = result["matches"]
    assert (match["document_id"], match["path"], match["number"]) == (
        first.document_id,
        "budget.txt",
        1,
    )
    assert (match["is_latest"], match["is_final"], match["superseded_by"]) == (False, False, 2)
    assert "superseded by v2" in officium("verify", str(copy)).stdout


def test_cli_verify_of_an_unknown_copy_exits_1(share, officium, tmp_path):
    share.save("budget.txt", b"budget")
    stranger = tmp_path / "stranger.txt"
    stranger.write_bytes(b"never recorded")
    result = officium("verify", str(stranger), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "sha256": hashlib.sha256(b"never recorded").hexdigest(),
        "matches": [],
    }
    assert "matches no recorded version" in result.stderr


def test_cli_owner_hands_a_document_over(share, officium, admin):
    recorded = share.save("contract.txt", b"terms")
    admin.create_office(name="Legal")
    events_before = len(admin.history(recorded.document_id).events)

    changed = _json(
        officium("owner", "share:contract.txt", "Legal", "--reason", "review", "--json")
    )
    assert changed["owner_office"] == "Legal"
    assert admin.document(recorded.document_id).owner_office == "Legal"
    assert len(admin.history(recorded.document_id).events) == events_before + 1

    back = officium("owner", str(recorded.document_id), "Planning")
    assert back.exit_code == 0 and "Planning" in back.stdout
    unknown = officium("owner", str(recorded.document_id), "Nowhere")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("officium: ")


# -------------------------------------------------------------------- audit CLI


def test_cli_audit_events_pages_and_limits(share, officium, admin):
    share.save("x.txt", b"x")
    every = _json(officium("audit", "events", "--json"))["events"]
    assert [e["seq"] for e in every] == list(range(1, len(every) + 1))
    some = _json(officium("audit", "events", "--after", "1", "--limit", "2", "--json"))
    assert [e["seq"] for e in some["events"]] == [2, 3] and some["next"] == 3
    shown = officium("audit", "events", "--after", str(len(every) - 1))
    assert shown.exit_code == 0 and every[-1]["action"] in shown.stdout


def test_cli_audit_check_recomputes_the_chain_locally(share, officium, admin):
    share.save("x.txt", b"x")
    head = admin.audit_verify()
    local = _json(officium("audit", "check", "--json"))
    assert (local["ok"], local["head_seq"], local["head_hash"]) == (
        True,
        head.head_seq,
        head.head_hash,
    )
    assert local["checked"] == head.head_seq
    shown = officium("audit", "check")
    assert shown.exit_code == 0 and "OK" in shown.stdout and head.head_hash in shown.stdout
    server = _json(officium("audit", "check", "--server-side", "--json"))
    assert server["ok"] and server["head_hash"] == head.head_hash


def _altered(page: AuditEventPage, seq: int) -> AuditEventPage:
    events = [
        e.model_copy(update={"canonical": e.canonical.replace('"seq":', '"seq": ')})
        if e.seq == seq
        else e
        for e in page.events
    ]
    return page.model_copy(update={"events": events})


def _dropped(page: AuditEventPage, seq: int) -> AuditEventPage:
    return page.model_copy(update={"events": [e for e in page.events if e.seq != seq]})


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [(_altered, "do not match its recorded hash"), (_dropped, "missing or out of order")],
)
def test_cli_audit_check_reports_the_first_break(share, officium, monkeypatch, tamper, reason):
    share.save("x.txt", b"x")
    genuine = OfficiumClient.audit_events

    def tampered(self, **kwargs) -> AuditEventPage:
        return tamper(genuine(self, **kwargs), 3)

    monkeypatch.setattr(OfficiumClient, "audit_events", tampered)
    result = officium("audit", "check", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["first_broken_seq"], report["checked"]) == (False, 3, 2)
    assert reason in report["reason"]
    shown = officium("audit", "check")
    assert shown.exit_code == 1 and "BROKEN at event #3" in shown.stdout


# ------------------------------------------------------------------- plug-ins


def greet(name: str = "world") -> None:
    """A stand-in for a command another part plugs in."""
    print(f"hello {name}")


def test_plugin_commands_come_from_entry_points(monkeypatch):
    plugin = EntryPoint(name="greet", value=f"{__name__}:greet", group=cli_main.COMMAND_GROUP)
    broken = EntryPoint(
        name="broken", value="no_such_module_anywhere:run", group=cli_main.COMMAND_GROUP
    )
    monkeypatch.setattr(cli_main, "entry_points", lambda group: [plugin, broken])
    app = build_app()
    add_plugin_commands(app)
    result = CliRunner().invoke(app, ["greet", "--name", "Weber"])
    assert result.exit_code == 0 and result.stdout == "hello Weber\n"
    assert CliRunner().invoke(app, ["broken"]).exit_code != 0
