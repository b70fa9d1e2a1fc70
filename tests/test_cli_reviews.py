"""Approval from the command line (and the SDK under it), against the real app in-process.

Planning owns the folder 'share'; paula is a member of Planning and submits. Legal's
approvers are larry and lena, Finance's is fred; victor is named in person. Board is
Legal's parent office, which an overdue review escalates to.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from clients.cli.main import build_app
from clients.cli.reviews import parse_due
from clients.sdk import ContentMismatch, OfficiumClient
from core.errors import Conflict, Invalid, NotFound
from core.schemas import ReportKind, Role, VersionReport

# The keys DESIGN §4 promises.
STATUS_KEYS = {"id", "folder", "path", "owner_office", "state", "deleted", "latest", "final"}
STATUS_KEYS |= {"awaiting"}
AWAITING_KEYS = {"party", "action", "since", "due"}
INBOX_ITEM_KEYS = {"document_id", "path", "action", "since", "due"}
FINAL_KEYS = {"document_id", "number", "sha256", "approved_at", "approvers"}

PEOPLE = {
    "paula": ("Planning", Role.member),
    "larry": ("Legal", Role.approver),
    "lena": ("Legal", Role.approver),
    "fred": ("Finance", Role.approver),
    "victor": (None, None),
    "bob": ("Board", Role.approver),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Office:
    """The register, the shared folder and everyone's tokens."""

    def __init__(self, admin: OfficiumClient, client_for, root: Path) -> None:
        admin.create_office(name="Planning")
        admin.create_office(name="Board")
        admin.create_office(name="Legal", parent="Board")
        admin.create_office(name="Finance")
        self.tokens: dict[str, str] = {}
        for username, (office, role) in PEOPLE.items():
            admin.create_person(username=username, name=username.capitalize())
            if office is not None:
                admin.create_membership(username=username, office=office, role=role)
            self.tokens[username] = admin.create_token(username=username).token
        root.mkdir()
        self.root = root
        admin.create_folder(name="share", root=str(root), default_owner="Planning")
        self.agent = client_for(admin.create_token(folder="share").token)
        self.clients = {name: client_for(token) for name, token in self.tokens.items()}
        self._commits = itertools.count(1)

    def save(self, path: str, data: bytes) -> int:
        """Write a file in the share, upload and report it; return the document id."""
        (self.root / path).write_bytes(data)
        self.agent.upload_content(sha(data), data)
        report = VersionReport(
            path=path,
            kind=ReportKind.modified,
            sha256=sha(data),
            size=len(data),
            commit=hashlib.sha1(f"commit {next(self._commits)}".encode()).hexdigest(),
            observed_at=datetime.now(UTC),
        )
        [result] = self.agent.report("share", [report]).results
        assert result.document_id is not None, result.message
        return result.document_id


@pytest.fixture
def office(admin, client_for, tmp_path) -> Office:
    return Office(admin, client_for, tmp_path / "share")


@pytest.fixture
def officium(http, office):
    """Run ``officium ARGS...`` as one of the people (``as_``); return the click Result."""
    runner = CliRunner()
    app = build_app()

    def run(*args: str, as_: str):
        return runner.invoke(
            app,
            [*args, "--token", office.tokens[as_]],
            obj={"http_client": http},
            env={"COLUMNS": "200", "OFFICIUM_TOKEN": None, "OFFICIUM_URL": None},
        )

    return run


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _refused(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("officium: ")
    for needle in needles:
        assert needle in result.stderr


# ------------------------------------------------------------------ the whole path


def test_submit_inbox_approve_final_drift_and_ack(office, officium, tmp_path):
    office.save("plan.txt", b"draft one")
    doc = office.save("plan.txt", b"draft two")

    review = _json(
        officium(
            "submit", "share:plan.txt", "--to", "Legal", "--due", "2031-03-31",
            "-m", "for the board", "--json", as_="paula",
        )
    )  # fmt: skip
    assert (review["document_id"], review["state"], review["mode"]) == (doc, "open", "all")
    assert review["version"] == {"number": 2, "sha256": sha(b"draft two")}
    assert (review["parties"], review["comment"]) == (["office:Legal"], "for the board")
    assert review["submitted_by"] == "paula"
    # A date alone is due at the end of that day, UTC.
    assert datetime.fromisoformat(review["due"]) == datetime(2031, 3, 31, 23, 59, 59, 999999, UTC)
    assert [a["party"] for a in review["awaiting"]] == ["office:Legal"]

    status = _json(officium("status", str(doc), "--json", as_="paula"))
    assert status.keys() >= STATUS_KEYS
    assert (status["state"], status["review_id"], status["final"]) == (
        "in_review",
        review["id"],
        None,
    )
    [awaited] = status["awaiting"]
    assert awaited.keys() >= AWAITING_KEYS
    assert (awaited["party"], awaited["due"]) == ("office:Legal", review["due"])
    shown = officium("status", "share:plan.txt", as_="paula")
    assert shown.exit_code == 0, shown.output
    for fact in (f"#{review['id']} open", "office:Legal", "2031-03-31", "in_review"):
        assert fact in shown.stdout

    inbox = _json(officium("inbox", "--json", as_="larry"))
    [item] = inbox["items"]
    assert item.keys() >= INBOX_ITEM_KEYS
    assert (item["document_id"], item["path"], item["due"]) == (doc, "plan.txt", review["due"])
    assert "share:plan.txt" in officium("inbox", as_="larry").stdout
    assert _json(officium("inbox", "--json", as_="fred")) == {"items": []}
    assert "Nothing awaits you" in officium("inbox", as_="fred").stdout

    approved = officium("approve", "share:plan.txt", "-m", "sound", as_="larry")
    assert approved.exit_code == 0, approved.output
    assert "v2 of share:plan.txt is approved" in approved.stdout
    assert _json(officium("inbox", "--json", as_="larry")) == {"items": []}

    final = _json(officium("final", "share:plan.txt", "--json", as_="fred"))
    assert final.keys() >= FINAL_KEYS
    assert (final["document_id"], final["number"], final["sha256"]) == (doc, 2, sha(b"draft two"))
    [approver] = final["approvers"]
    assert (approver["username"], approver["verdict"], approver["comment"]) == (
        "larry", "approve", "sound",
    )  # fmt: skip
    assert approver["office"] == "Legal"
    shown = officium("final", "share:plan.txt", as_="fred")
    assert shown.exit_code == 0 and sha(b"draft two") in shown.stdout and "Larry" in shown.stdout

    copy = tmp_path / "copy.txt"
    written = officium("final", "share:plan.txt", "-o", str(copy), "--json", as_="fred")
    assert _json(written)["file"] == str(copy)
    assert copy.read_bytes() == b"draft two"
    assert "wrote final v2" in written.stderr

    # A new save does not inherit the approval: the final stays v2 and the status says so.
    office.save("plan.txt", b"draft three")
    status = _json(officium("status", str(doc), "--json", as_="paula"))
    assert (status["state"], status["final"]["number"], status["latest"]["number"]) == (
        "approved", 2, 3,
    )  # fmt: skip
    assert status["note"] == "final v2; working copy v3 differs"
    shown = officium("status", str(doc), as_="paula")
    assert "final v2; working copy v3 differs" in shown.stdout
    assert sha(b"draft two")[:12] in shown.stdout
    assert _json(officium("final", str(doc), "--json", as_="paula"))["number"] == 2

    # Planning must acknowledge the final version; once paula has, it leaves her inbox.
    waiting = _json(officium("inbox", "--json", as_="paula"))["items"]
    assert [(i["document_id"], i["action"]) for i in waiting] == [(doc, "acknowledge final v2")]
    ack = _json(officium("ack", "share:plan.txt", "--json", as_="paula"))
    assert (ack["username"], ack["number"], ack["sha256"]) == ("paula", 2, sha(b"draft two"))
    assert _json(officium("inbox", "--json", as_="paula")) == {"items": []}
    assert "paula acknowledged final v2" in officium("ack", str(doc), as_="paula").stdout
    acks = office.clients["fred"].acknowledgements(doc)
    assert [a.username for a in acks.acknowledged] == ["paula"]
    assert acks.final.number == 2


def test_withdraw_closes_the_review_and_empties_the_inbox(office, officium):
    doc = office.save("memo.txt", b"memo")
    review = _json(officium("submit", str(doc), "--to", "Legal", "--json", as_="paula"))

    _refused(officium("withdraw", str(doc), as_="larry"), "owner office")
    withdrawn = _json(officium("withdraw", str(doc), "--json", as_="paula"))
    assert (withdrawn["id"], withdrawn["state"], withdrawn["awaiting"]) == (
        review["id"], "withdrawn", [],
    )  # fmt: skip
    status = _json(officium("status", str(doc), "--json", as_="paula"))
    assert (status["state"], status["awaiting"], status["review_id"]) == ("draft", [], None)
    assert _json(officium("inbox", "--json", as_="larry")) == {"items": []}
    _refused(officium("withdraw", str(doc), as_="paula"), "no open review")
    _refused(officium("approve", str(doc), as_="larry"), "no open review")
    # A withdrawn review leaves room for a new one.
    again = _json(officium("submit", str(doc), "--to", "Finance", "--json", as_="paula"))
    assert again["state"] == "open" and again["id"] != review["id"]


def test_reject_needs_a_comment(office, officium):
    doc = office.save("budget.txt", b"budget")
    _json(officium("submit", str(doc), "--to", "Legal", "--json", as_="paula"))

    for blank in ([], ["-m", "   "]):
        _refused(officium("reject", str(doc), *blank, as_="larry"), "needs a comment", "-m")
    assert _json(officium("status", str(doc), "--json", as_="paula"))["state"] == "in_review"

    rejected = officium("reject", str(doc), "-m", "the totals are wrong", "--json", as_="larry")
    review = _json(rejected)
    assert review["state"] == "rejected"
    assert [(d["verdict"], d["comment"]) for d in review["decisions"]] == [
        ("reject", "the totals are wrong")
    ]
    assert _json(officium("status", str(doc), "--json", as_="paula"))["state"] == "rejected"
    _refused(officium("final", str(doc), as_="paula"), "has no final version")


def test_the_sdk_reject_is_refused_by_the_server_without_a_reason(office):
    doc = office.save("budget.txt", b"budget")
    office.clients["paula"].submit(doc, parties=["office:Legal"])
    with pytest.raises(Invalid, match="rejection needs a comment"):
        office.clients["larry"].reject(doc, comment=" ")
    assert office.clients["larry"].reviews(doc)[0].state == "open"


def test_final_of_a_document_without_one_exits_1(office, officium):
    doc = office.save("draft.txt", b"never approved")
    result = officium("final", "share:draft.txt", "--json", as_="paula")
    _refused(result, "share:draft.txt has no final version")
    unknown = officium("final", "share:nothing-here.txt", as_="paula")
    _refused(unknown, "share:nothing-here.txt is not a recorded document")
    with pytest.raises(NotFound):
        office.clients["paula"].final(doc)


def test_final_o_into_a_directory_uses_the_document_name(office, officium, tmp_path):
    doc = office.save("report.txt", b"the report")
    office.clients["paula"].submit(doc, parties=["person:victor"])
    office.clients["victor"].approve(doc)
    out = tmp_path / "out"
    out.mkdir()
    assert officium("final", str(doc), "-o", str(out), as_="paula").exit_code == 0
    assert [p.name for p in out.iterdir()] == ["report.txt"]
    assert (out / "report.txt").read_bytes() == b"the report"


def test_final_o_keeps_nothing_whose_hash_is_not_the_final_one(
    office, officium, tmp_path, monkeypatch
):
    doc = office.save("report.txt", b"the report")
    office.clients["paula"].submit(doc, parties=["person:victor"])
    office.clients["victor"].approve(doc)
    genuine = OfficiumClient.final

    def misreported(self, id):
        return genuine(self, id).model_copy(update={"sha256": sha(b"something else")})

    monkeypatch.setattr(OfficiumClient, "final", misreported)
    out = tmp_path / "out"
    out.mkdir()
    _refused(
        officium("final", str(doc), "-o", str(out / "copy.txt"), as_="paula"), "nothing was written"
    )
    assert list(out.iterdir()) == []


def test_download_checks_the_expected_hash(office, tmp_path):
    doc = office.save("a.txt", b"aaa")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "a.txt"
    with pytest.raises(ContentMismatch, match="expected"):
        office.agent.download(doc, 1, target, expect_sha256=sha(b"bbb"))
    assert list(out.iterdir()) == []
    assert office.agent.download(doc, 1, target, expect_sha256=sha(b"aaa")) == sha(b"aaa")
    assert target.read_bytes() == b"aaa"


# ------------------------------------------------------------------ policies


def test_quorum_2_needs_two_of_three(office, officium):
    doc = office.save("policy.txt", b"policy")
    review = _json(
        officium(
            "submit", str(doc), "--to", "Legal", "--to", "Finance", "--person", "victor",
            "--mode", "quorum:2", "--json", as_="paula",
        )
    )  # fmt: skip
    assert review["mode"] == "quorum:2"
    assert review["parties"] == ["office:Legal", "office:Finance", "person:victor"]

    first = _json(officium("approve", str(doc), "--json", as_="larry"))
    assert first["state"] == "open"
    assert {a["party"] for a in first["awaiting"]} == {"office:Finance", "person:victor"}
    # Legal has decided; its other approver does not count twice.
    _refused(officium("approve", str(doc), as_="lena"))
    assert _json(officium("status", str(doc), "--json", as_="paula"))["state"] == "in_review"

    second = _json(officium("approve", str(doc), "--json", as_="victor"))
    assert second["state"] == "approved" and second["awaiting"] == []
    final = _json(officium("final", str(doc), "--json", as_="paula"))
    assert sorted(a["username"] for a in final["approvers"]) == ["larry", "victor"]


def test_sequential_follows_the_order_the_options_were_given(office, officium):
    doc = office.save("contract.txt", b"contract")
    review = _json(
        officium(
            "submit", str(doc), "--to", "Finance", "--person", "victor", "--to", "Legal",
            "--mode", "sequential", "--json", as_="paula",
        )
    )  # fmt: skip
    assert review["parties"] == ["office:Finance", "person:victor", "office:Legal"]
    assert [a["party"] for a in review["awaiting"]] == ["office:Finance"]
    assert _json(officium("inbox", "--json", as_="larry")) == {"items": []}
    assert [i["document_id"] for i in _json(officium("inbox", "--json", as_="fred"))["items"]] == [
        doc
    ]

    _refused(officium("approve", str(doc), as_="larry"), "not your turn")
    _refused(officium("approve", str(doc), as_="victor"), "not your turn")
    after_fred = _json(officium("approve", str(doc), "--json", as_="fred"))
    assert [a["party"] for a in after_fred["awaiting"]] == ["person:victor"]
    after_victor = _json(officium("approve", str(doc), "--json", as_="victor"))
    assert [a["party"] for a in after_victor["awaiting"]] == ["office:Legal"]
    done = _json(officium("approve", str(doc), "--json", as_="larry"))
    assert done["state"] == "approved"
    assert [d["username"] for d in done["decisions"]] == ["fred", "victor", "larry"]


def test_submit_checks_what_it_is_given(office, officium):
    doc = office.save("x.txt", b"x")
    _refused(officium("submit", str(doc), as_="paula"), "--to OFFICE", "--person USERNAME")
    _refused(officium("submit", str(doc), "--to", "Nowhere", as_="paula"), "office:Nowhere")
    _refused(
        officium("submit", str(doc), "--to", "Legal", "--mode", "quorum:3", as_="paula"),
        "quorum",
    )
    _refused(officium("submit", str(doc), "--to", "Legal", "--version", "7", as_="paula"))
    _refused(officium("submit", str(doc), "--to", "Legal", as_="fred"), "owner office")
    bad_due = officium("submit", str(doc), "--to", "Legal", "--due", "next week", as_="paula")
    assert bad_due.exit_code == 2 and "not a date" in bad_due.output
    assert _json(officium("status", str(doc), "--json", as_="paula"))["state"] == "draft"


def test_submit_an_older_version_and_see_it_is_not_the_latest(office, officium):
    office.save("spec.txt", b"spec one")
    doc = office.save("spec.txt", b"spec two")
    review = _json(
        officium("submit", str(doc), "--version", "1", "--to", "Legal", "--json", as_="paula")
    )
    assert review["version"] == {"number": 1, "sha256": sha(b"spec one")}
    assert review["pinned_is_latest"] is False
    shown = officium("status", str(doc), as_="paula")
    assert "no longer the latest" in shown.stdout
    assert _json(officium("approve", str(doc), "--json", as_="lena"))["state"] == "approved"
    final = _json(officium("final", str(doc), "--json", as_="paula"))
    assert (final["number"], final["sha256"]) == (1, sha(b"spec one"))


def test_the_submitter_cannot_decide_on_her_own_submission(office, officium):
    doc = office.save("self.txt", b"self")
    _json(officium("submit", str(doc), "--person", "paula", "--json", as_="paula"))
    _refused(officium("approve", str(doc), as_="paula"))
    assert _json(officium("status", str(doc), "--json", as_="paula"))["state"] == "in_review"


def test_a_second_open_review_is_refused(office, officium):
    doc = office.save("once.txt", b"once")
    _json(officium("submit", str(doc), "--to", "Legal", "--json", as_="paula"))
    _refused(officium("submit", str(doc), "--to", "Finance", as_="paula"), "already has an open")


# ------------------------------------------------------------------ the SDK's remaining calls


def test_sdk_reviews_keys_and_escalation(office, admin, clock):
    paula, larry = office.clients["paula"], office.clients["larry"]
    doc = office.save("late.txt", b"late")
    due = datetime.now(UTC) + timedelta(days=1)
    review = paula.submit(doc, parties=["office:Legal"], due=due, comment="urgent")
    assert (review.due, review.comment) == (due, "urgent")

    assert admin.escalate() == 0  # not overdue yet
    clock.advance(days=2)
    assert admin.escalate() == 1
    assert admin.escalate() == 0  # each escalation is recorded once
    parties = [a.party for a in admin.document(doc).awaiting]
    assert parties[0] == "office:Legal" and "office:Board" in parties
    assert [i.document_id for i in office.clients["bob"].inbox().items] == [doc]

    decided = larry.approve(doc, comment="late but fine")
    assert decided.state == "approved"
    [listed] = paula.reviews(doc)
    assert (listed.id, listed.state) == (review.id, "approved")
    [decision] = listed.decisions
    assert decision.username == "larry" and decision.signature.count(".") == 2
    kids = {key.kid for key in paula.public_keys()}
    assert kids, "the server publishes the key its signatures can be checked with"

    with pytest.raises(Conflict):
        paula.withdraw(doc)  # nothing is open any more


def test_sdk_withdraw_and_acknowledgements(office):
    paula, victor = office.clients["paula"], office.clients["victor"]
    doc = office.save("note.txt", b"note")
    assert paula.acknowledgements(doc).final is None
    with pytest.raises(Conflict):
        paula.acknowledge(doc)
    paula.submit(doc, parties=["person:victor"])
    assert paula.withdraw(doc).state == "withdrawn"
    paula.submit(doc, parties=["person:victor"])
    victor.approve(doc)
    before = paula.acknowledgements(doc)
    assert (before.final.number, before.acknowledged, "paula" in before.pending) == (1, [], True)
    ack = paula.acknowledge(doc)
    after = paula.acknowledgements(doc)
    assert [a.username for a in after.acknowledged] == ["paula"] and "paula" not in after.pending
    assert paula.acknowledge(doc).acknowledged_at == ack.acknowledged_at  # once per version


# ------------------------------------------------------------------ --due


@pytest.mark.parametrize(
    ("text", "due"),
    [
        ("2030-06-01", datetime(2030, 6, 1, 23, 59, 59, 999999, UTC)),
        ("2030-06-01T17:30", datetime(2030, 6, 1, 17, 30, tzinfo=UTC)),
        ("2030-06-01T17:30Z", datetime(2030, 6, 1, 17, 30, tzinfo=UTC)),
        ("2030-06-01T17:30+02:00", datetime(2030, 6, 1, 15, 30, tzinfo=UTC)),
    ],
)
def test_due_dates(text, due):
    assert parse_due(text) == due


def test_due_that_is_no_date_is_refused():
    with pytest.raises(typer.BadParameter, match="not a date"):
        parse_due("soon")


def test_final_o_into_a_missing_directory_names_the_file_asked_for(office, officium, tmp_path):
    doc = office.save("report.txt", b"the report")
    office.clients["paula"].submit(doc, parties=["person:victor"])
    office.clients["victor"].approve(doc)
    target = tmp_path / "missing" / "report.txt"
    _refused(officium("final", str(doc), "-o", str(target), as_="paula"), str(target))
    assert not target.parent.exists()


def test_a_due_date_in_the_past_is_refused(office, officium):
    doc = office.save("old.txt", b"old")
    result = officium("submit", str(doc), "--to", "Legal", "--due", "2001-02-03", as_="paula")
    assert result.exit_code == 1, result.output
    assert "2001-02-03" in result.stderr and "already past" in result.stderr
